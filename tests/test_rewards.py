"""Rewards: strict correctness resists the hacks that substring matching pays for."""

from __future__ import annotations

import pytest

from bioreason.training.rewards import REWARDS, get_reward

LABELS = ["heavy", "kappa", "lambda"]


def score(name, text, gold="kappa", **kw):
    return get_reward(name)([text], answer=[gold], label_set=[LABELS], **kw)[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>two Cys</think><answer>kappa</answer>", 1.0),
        ("<think>x</think><answer> Kappa. </answer>\n", 1.0),  # case / whitespace / full stop are not hacks
        ("<think>x</think><answer>lambda</answer>", 0.0),
        ("<think>x</think><answer>heavy, kappa or lambda</answer>", 0.0),  # several labels
        ("<think>x</think><answer>not kappa</answer>", 0.0),  # a negation
        ("<think>x</think> the answer is kappa", 0.0),  # outside the tags
        ("kappa", 0.0),
        ("<think>x</think><answer>kappa</answer><answer>lambda</answer>", 0.0),  # two answers
        ("<think>x</think><answer>kappa</answer> or maybe lambda", 0.0),  # hedging after the answer
        ("<think>x</think><answer>kappa light chain</answer>", 0.0),
    ],
)
def test_correctness_is_strict(text, expected):
    assert score("correctness", text) == expected


def test_correctness_requires_the_label_set_when_given():
    assert get_reward("correctness")(["<answer>kappa</answer>"], answer=["kappa"], label_set=[["heavy"]]) == [0.0]
    assert get_reward("correctness")(["<answer>kappa</answer>"], answer=["kappa"]) == [1.0]


def test_conversational_completions():
    completion = [{"role": "assistant", "content": "<think>x</think><answer>kappa</answer>"}]
    assert get_reward("correctness")([completion], answer=["kappa"]) == [1.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("<think>x</think><answer>a</answer>", 1.0), ("<answer>a</answer>", 0.5), ("a", 0.0),
     ("<think>x</think><answer>a</answer> extra", 0.0)],
)
def test_format(text, expected):
    assert score("format", text) == expected


def test_multilabel_f1_by_hand():
    f1 = get_reward("multilabel_f1")
    assert f1(["<answer>GO:1, GO:2</answer>"], answer=["GO:2; GO:3"]) == [pytest.approx(0.5)]
    assert f1(["<answer>GO:1</answer>"], answer=[["GO:1"]]) == [1.0]
    assert f1(["GO:1"], answer=["GO:1"]) == [0.0]


def test_length_and_registry():
    assert score("length", "a" * 10, target_chars=20) == 1.0
    assert score("length", "a" * 30, target_chars=20) == pytest.approx(0.5)
    assert set(REWARDS) == {"correctness", "format", "multilabel_f1", "length"}
    with pytest.raises(ValueError, match=r"Unknown reward 'substring'; available: \['correctness'"):
        get_reward("substring")


def test_rl_stops_after_consecutive_steps_where_every_rollout_is_right():
    from transformers import TrainerControl, TrainerState

    from bioreason.training.solved_stop import StopWhenSolved

    state = TrainerState()  # one state for the stage, as the Trainer keeps it; its log history survives a resume

    def log(callback, step, zero_std, correct):
        control = TrainerControl()
        state.global_step = step
        logs = {"frac_reward_zero_std": zero_std, "rewards/correctness/mean": correct}
        state.log_history.append({**logs, "step": step})  # as Trainer.log does: a copy with the step, then on_log
        callback.on_log(None, state, control, logs=logs)
        return control.should_training_stop

    stop = StopWhenSolved(patience=2)
    assert not log(stop, 1, 1.0, 1.0)  # solved once
    assert not log(stop, 2, 0.5, 0.9)  # some groups still learn: the count restarts
    assert not log(stop, 3, 1.0, 0.0)  # every group without advantage but all wrong: keep sampling
    resumed = StopWhenSolved(patience=2)  # a stage resumed from a checkpoint: a new callback, the same history
    assert not log(resumed, 4, 1.0, 1.0)
    assert log(resumed, 5, 1.0, 1.0)
    assert resumed.record()["zero_advantage_steps"] == 4 and "at step 5" in resumed.record()["stopped_early"]
    never = StopWhenSolved(patience=0)
    state.log_history.clear()
    assert not any(log(never, k, 1.0, 1.0) for k in range(1, 6))
    assert never.record() == {"zero_advantage_steps": 5}
