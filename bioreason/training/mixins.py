"""What our trainers add to TRL's through `Trainer`'s public overridable methods: a separate learning rate for the
projectors, and checkpoints written atomically."""

from __future__ import annotations

import os
import shutil
import warnings

from bioreason.data.tasks import replace_dir
from bioreason.training.faults import kill_point
from bioreason.training.run_io import save_failed, write_error

# TRL 1.16 reads `model.is_gradient_checkpointing`, which transformers 5.25 deprecates: a warning about TRL's code on
# every GRPO step, not about the user's run (TRL's own fix will remove the call)
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def is_projector_parameter(name: str) -> bool:
    """A projector's parameter, bare (`model.projectors.rna.*`) or under PEFT (`*.projectors.rna.modules_to_save.*`)."""
    return name.startswith("projectors.") or ".projectors." in name


class ProjectorLearningRateMixin:
    """`Trainer.create_optimizer` with the projectors' parameters moved into groups of their own at
    `args.projector_learning_rate` (each keeps its group's weight decay); the scheduler, built after, scales every
    group by the same factor. Without the setting the optimizer is transformers' own."""

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        rate = getattr(self.args, "projector_learning_rate", None)
        if rate is None or rate == self.args.learning_rate:
            return optimizer
        named = (model if model is not None else self.model).named_parameters()
        ids = {id(p) for n, p in named if p.requires_grad and is_projector_parameter(n)}
        for group in list(optimizer.param_groups):
            mine = [p for p in group["params"] if id(p) in ids]
            if mine:
                group["params"] = [p for p in group["params"] if id(p) not in ids]
                optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": mine,
                                           "lr": rate})
        optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
        return optimizer


class AtomicCheckpointMixin:
    """`Trainer._save_checkpoint` writes `checkpoint-N` in place, so a kill mid-write leaves a partial checkpoint that
    `resume_from_checkpoint=True` would pick up. Here it writes into `.staging/` and the finished folder is renamed
    into place after every process has written its part (RNG states are per process)."""

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import get_last_checkpoint, rotate_checkpoints

        run_dir = self._get_output_dir(trial=trial)
        staging = os.path.join(run_dir, ".staging")
        name = f"checkpoint-{self.state.global_step}"
        shutil.rmtree(os.path.join(staging, name), ignore_errors=True)  # a killed earlier attempt's leftovers
        self._get_output_dir = lambda trial=None: staging  # shadows the method for this one call
        try:
            super()._save_checkpoint(model, trial)
        except Exception as err:  # e.g. ENOSPC: drop the partial copy, keep the checkpoints already in place
            cause = write_error(err, staging)
            shutil.rmtree(os.path.join(staging, name), ignore_errors=True)
            if cause is None:
                raise
            raise save_failed(cause, os.path.join(run_dir, name), get_last_checkpoint(run_dir)) from err
        finally:
            self.__dict__.pop("_get_output_dir", None)
        self.accelerator.wait_for_everyone()
        kill_point("checkpoint-staged")
        if self.args.should_save:
            replace_dir(os.path.join(staging, name), os.path.join(run_dir, name))
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit, use_mtime=False)
        self.accelerator.wait_for_everyone()
