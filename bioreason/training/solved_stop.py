"""Stop an RL stage whose policy is already right on every rollout.

GRPO learns from the spread of rewards within a group: a group whose samples all score the same has zero advantage
and contributes no gradient. When every group of a step is like that *because every rollout is right* (the SFT
before it already solved the training prompts), further steps cost a generation pass each and change nothing
(seen in the quickstart: 16 of 16 steps at `frac_reward_zero_std` 1, loss 0, grad_norm 0). This callback counts
such steps and ends the stage after `patience` consecutive ones; groups that are all wrong are counted but do not
stop training (more samples may still find a right one).
"""

from __future__ import annotations

from transformers import TrainerCallback


def _solved(log: dict) -> bool:
    return float(log["frac_reward_zero_std"]) >= 1.0 and float(log.get("rewards/correctness/mean", 0.0)) >= 1.0


class StopWhenSolved(TrainerCallback):
    """Reads the GRPO logs in `state.log_history` (restored with a checkpoint, so a resumed stage counts as the
    uninterrupted one did): `frac_reward_zero_std` (share of groups without advantage) and the correctness reward's
    mean (`rewards/correctness/mean`, 1 when every rollout is right)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.history: list[dict] = []
        self.stopped_at: int | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        # the Trainer appends each log (with its step) to the history before it calls on_log
        self.history = [log for log in state.log_history if "frac_reward_zero_std" in log]
        recent = self.history[-self.patience:] if self.patience else []
        if self.patience and len(recent) == self.patience and all(_solved(log) for log in recent):
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def record(self) -> dict:
        """What the stage reports: steps without any advantage, and where it stopped early (if it did)."""
        out = {"zero_advantage_steps": sum(float(log["frac_reward_zero_std"]) >= 1.0 for log in self.history)}
        if self.stopped_at is not None:
            out["stopped_early"] = (f"every rollout right for {self.patience} steps in a row (no advantage to "
                                    f"learn from) at step {self.stopped_at}")
        return out


__all__ = ["StopWhenSolved"]
