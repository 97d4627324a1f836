"""Real write failures for the full-disk tests: a process runs with a filesystem that fills up (a size-limited tmpfs
in a user + mount namespace of its own: no root needed, nothing left mounted) or, where namespaces are not allowed,
with a file-size limit (RLIMIT_FSIZE: the kernel refuses a write past it with EFBIG). The code under test meets the
failing write itself, with partial files on disk, instead of a mocked method that raises before anything is written."""

from __future__ import annotations

import functools
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMESPACE = ["unshare", "--user", "--map-root-user", "--mount"]


@functools.cache
def tmpfs_available() -> bool:
    """Whether this machine lets an unprivileged process mount a tmpfs in a namespace of its own."""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as mount:
        proc = subprocess.run([*NAMESPACE, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(mount)}"],
                              capture_output=True, timeout=30)
    return proc.returncode == 0


def run_on_small_disk(args: list[str], size: int, mount: Path, keep: Path,
                      timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python args...` with a tmpfs of `size` bytes mounted at `mount` (an existing, empty folder); when it has
    ended, whatever it left on the tmpfs is copied to `keep` (the tmpfs ends with the namespace)."""
    command = " ".join(shlex.quote(a) for a in [sys.executable, *args])
    script = (f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mount))} || exit 99\n"
              f"{command}\nrc=$?\ncp -a {shlex.quote(str(mount))}/. {shlex.quote(str(keep))}/\nexit $rc\n")
    keep.mkdir(parents=True, exist_ok=True)
    return subprocess.run([*NAMESPACE, "sh", "-c", script], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def run_with_file_size_limit(args: list[str], limit: int, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python args...` where no file may grow past `limit` bytes (SIGXFSZ ignored, so the write fails with
    EFBIG instead of killing the process)."""

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an ignored signal stays ignored across exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          preexec_fn=limited)


def room_for_one_and_a_half(path: Path) -> int:
    """A tmpfs size that holds the folder `path` once and half of it again, but not twice (tmpfs counts whole 4 KiB
    pages per file, and the run writes a few small files of its own beside it)."""
    files = [f.stat().st_size for f in Path(path).rglob("*") if f.is_file()]
    pages = sum(-(-size // 4096) * 4096 for size in files)
    size = pages + pages // 2 + 4096 * 8
    assert size < 2 * pages, f"{path} is too small to tell one copy from two on a tmpfs"
    return size
