"""The run folder on disk: one process holds it (a lock), saves are atomic (a staging copy renamed into place; a
failed write, e.g. a full disk, leaves the earlier copy intact and says so in one line), and a resumed run finds its
newest whole checkpoint."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile

from bioreason.data.tasks import replace_dir
from bioreason.training.faults import kill_point


def remove_staging(folder: str) -> None:
    """Delete what a killed save left in `folder`: staging folders (`.tmp-*`, `.staging`) and temporary files
    (`*.tmp`). Only for a folder this process holds (`run_folder`): another writer's staging would go too."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith((".tmp-", ".staging")) or name.endswith(".tmp"):
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)


@contextlib.contextmanager
def run_folder(output_dir: str):
    """Hold `output_dir` for this run (on the main process; the others only run inside it): an exclusive lock
    (released by the OS however the process ends, SIGKILL included), so a second process on the same folder fails at
    once instead of both writing it; the staging a killed save left there is removed."""
    import fcntl

    from accelerate import PartialState

    if not PartialState().is_main_process:
        yield
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, ".lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise OSError(f"{output_dir} is in use by another process (pid {fh.read().strip() or '?'}); "
                          "wait for it or use another output_dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        remove_staging(output_dir)
        yield


def write_error(err: Exception, directory: str) -> OSError | None:
    """The OS error behind a failed write into `directory`, or None where `err` is not a write failure. Two writers
    do not raise OSError on a full disk, found by the full-disk tests on a real, size-limited tmpfs (each crashed the
    run with a traceback and left its partial checkpoint): safetensors' (Rust) raises `SafetensorError("... I/O
    error: No space left on device (os error 28)")`, and `torch.save` (optimizer.pt) a `RuntimeError` from its zip
    writer that carries no error number at all; for that one the disk's free space tells ENOSPC from other I/O
    errors (call this before removing the partial files)."""
    if isinstance(err, OSError):
        return err
    from safetensors import SafetensorError

    if isinstance(err, SafetensorError):
        match = re.search(r"I/O error: (.*) \(os error (\d+)\)", str(err))
        if match:
            return OSError(int(match.group(2)), match.group(1))
    if isinstance(err, RuntimeError) and any(mark in f"{err} {err.__context__}" for mark in TORCH_WRITE_FAILURES):
        try:
            full = shutil.disk_usage(directory).free < (1 << 20)
        except OSError:
            full = False
        if full:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return OSError(errno.EIO, f"torch.save could not write: {err}")
    return None


# What torch.save's zip writer raises when the stream under it fails (a full disk, a quota).
TORCH_WRITE_FAILURES = ("inline_container.cc", "PytorchStreamWriter failed", "iostream error")


def save_failed(err: OSError, what: str, kept: str | None) -> OSError:
    """The one-line error of a save that failed (a full disk, a quota): what was not written and what is intact."""
    kept_text = f"{kept} is intact" if kept else "nothing earlier was there"
    return OSError(err.errno, f"could not write {what} ({err.strerror or err}); its staging files were removed and "
                              f"{kept_text}")


def merged(model):
    """`model` with its LoRA adapter merged into the base weights: the weights `final/` holds and `from_pretrained`
    loads. A stage is scored on these, not on the adapter beside the base weights: under bf16 autocast the two round
    differently, and scores taken before the merge differed from the saved model's by a record or two in 507."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save_final(model, processor, out: str, merge_lora: bool = True) -> None:
    """Save a loadable BioReason folder atomically; LoRA adapters are merged so `from_pretrained` needs no PEFT. A
    failed write (e.g. ENOSPC) removes its staging folder and leaves an earlier `out` as it was."""
    if merge_lora:
        model = merged(model)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
    except Exception as err:
        cause = write_error(err, staging)
        shutil.rmtree(staging, ignore_errors=True)
        if cause is None:
            raise
        raise save_failed(cause, out, out if os.path.exists(out) else None) from err
    kill_point("final-staged")
    replace_dir(staging, out)


def write_json(path: str, data: dict) -> None:
    """Write JSON atomically (a temporary file renamed over `path`; on failure `path` keeps its old content)."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
    except OSError as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise save_failed(err, path, path if os.path.exists(path) else None) from err
    os.replace(tmp, path)


def resume_checkpoint(config, resume: bool) -> str | None:
    """The checkpoint a `resume: true` run continues from: the newest complete `checkpoint-N` in output_dir, or None
    (a run killed before its first checkpoint starts over rather than failing)."""
    from transformers.trainer_utils import get_last_checkpoint

    if not resume or not os.path.isdir(config.output_dir):
        return None
    return get_last_checkpoint(config.output_dir)


def end_processes() -> None:
    """Under torchrun / accelerate: wait for the main process's saves, then close the process group (a rank that
    exited while its peer still wrote aborted once with gloo: 'terminate called without an active exception')."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from accelerate import PartialState

        PartialState().wait_for_everyone()
        dist.destroy_process_group()
