"""How runs die: named kill points for the fault tests, and children that die with their parent.

Named kill points: with `BIOREASON_KILL_AT=NAME[:N]` in its environment a process kills itself
with SIGKILL (no cleanup, no `finally`, as a pre-empted cluster job dies) the N-th time (default the first) it reaches
the point NAME. Without the variable a point costs one dictionary lookup.

The points are `KILL_POINTS`; a call naming any other is an error, so the fault tests can count the points from the
code (tests/test_kill_points.py) and none goes untested."""

from __future__ import annotations

import os
import signal

from transformers import TrainerCallback

KILL_POINTS = {
    "pre-optimizer-step": "mid-step: after backward, before the optimizer step",
    "checkpoint-staged": "a checkpoint written but not yet renamed into place",
    "evaluate": "the start of a held-out evaluation",
    "stage-trained": "a pipeline stage trained and scored, its state not yet saved",
    "stage-saved": "between pipeline stages",
    "final-staged": "final/ (or a pipeline stage's model) written but not yet renamed into place",
}
_reached: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process here if `BIOREASON_KILL_AT` names this point (and this is its N-th visit)."""
    if name not in KILL_POINTS:
        raise ValueError(f"unknown kill point {name!r}: add it to bioreason.training.faults.KILL_POINTS")
    spec = os.environ.get("BIOREASON_KILL_AT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class KillPointCallback(TrainerCallback):
    """The mid-step point inside a Trainer's loop."""

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        kill_point("pre-optimizer-step")


def fault_callbacks() -> list[TrainerCallback]:
    """The callbacks a recipe adds to its trainer: none unless a kill point is armed."""
    return [KillPointCallback()] if os.environ.get("BIOREASON_KILL_AT") else []


def die_with_parent() -> None:
    """In a child started with `BIOREASON_PARENT_PID` (a study's run): ask Linux to SIGKILL this process when the
    parent dies, so a study killed with SIGKILL does not leave its runs going on (and writing their folders) behind
    it. If the parent is already gone, die now. Elsewhere than Linux: nothing (the run folder's lock still keeps a
    resumed study from running the same run twice)."""
    parent = os.environ.get("BIOREASON_PARENT_PID")
    if not parent:
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGKILL)
