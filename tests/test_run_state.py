"""The pipeline's run state (resume/state.json) is a file a user can edit: what it names is only ever read or deleted
inside the run folder."""

from __future__ import annotations

import json

import pytest

from bioreason.training.run_state import RunState


@pytest.mark.parametrize("name", ["ABSOLUTE", "../victim", "resume/../../victim", "."])
def test_a_model_folder_outside_the_run_is_refused_and_nothing_is_deleted(tmp_path, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("not the run's")
    run = tmp_path / "run"
    state = RunState.open(str(run), {"k": 1})
    state.update(model=str(victim) if name == "ABSOLUTE" else name)
    edited = RunState.open(str(run), {"k": 1})  # read back from state.json, as a resumed run does
    assert edited["model"] == json.loads((run / "resume" / "state.json").read_text())["model"]
    with pytest.raises(ValueError, match="not inside the run folder"):
        edited.finish({"stages": []})
    with pytest.raises(ValueError, match="not inside the run folder"):
        edited.load_model(None)
    assert (victim / "keep.txt").read_text() == "not the run's"


def test_a_model_folder_inside_the_run_is_deleted_when_the_run_finishes(tmp_path):
    run = tmp_path / "run"
    state = RunState.open(str(run), {"k": 1})
    (run / "resume" / "model-sft").mkdir(parents=True)
    state.update(model="resume/model-sft")
    state.finish({"stages": []})
    assert not (run / "resume" / "model-sft").exists() and state["finished"]
