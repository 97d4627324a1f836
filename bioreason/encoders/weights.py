"""Where encoder weights may come from: safetensors, or one pickle we pinned by hash.

Why: a `pytorch_model.bin` is a pickle, and reading a pickle runs the code it names; `torch.load(weights_only=True)`
narrows what it may name but is still an unpickler over a file someone else wrote. So a checkpoint a user points us
at is read only from `model.safetensors`. The one exception is a file this package depends on and has pinned by its
sha256 (AntiBERTy's weights inside the antiberty==0.1.3 wheel, which ships no safetensors): its bytes are known, so
what it unpickles is known.
"""

from __future__ import annotations

import hashlib
import os

import torch

CONVERT_HINT = ("convert a checkpoint you trust once: python -c \"import torch; "
                "from safetensors.torch import save_file; "
                "save_file(torch.load('pytorch_model.bin', weights_only=True), 'model.safetensors')\"")


class SafetensorsOnlyError(ValueError):
    """A weights source without `model.safetensors` (a pickle is not read), or a pinned pickle whose bytes changed."""


def no_safetensors(source: str) -> SafetensorsOnlyError:
    """The error for a source that offers only pickled weights, naming it and the conversion."""
    return SafetensorsOnlyError(f"{source}: no model.safetensors; bioreason reads encoder weights from safetensors "
                                f"only (a pytorch_model.bin is a pickle, which can run code when read); {CONVERT_HINT}")


def load_pinned_pickle(path: str, sha256: str) -> dict[str, torch.Tensor]:
    """The tensors of `path`, a pickled state dict, only if its sha256 is `sha256` (then through the weights-only
    unpickler); any other bytes are refused before they are read as a pickle."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise SafetensorsOnlyError(f"{path}: sha256 {digest.hexdigest()} is not the pinned {sha256}; a pickle is read "
                                   f"only when its bytes are the ones this package was released with "
                                   f"({os.path.basename(path)} changed or is another file); {CONVERT_HINT}")
    return torch.load(path, map_location="cpu", weights_only=True)
