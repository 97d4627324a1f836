"""Whether the JASPAR tasks can be learned from their train split at all by the model a biologist would train first
for TF binding: a DeepBind-style CNN (64 filters of width 12 scanning both strands, global max pool, dropout, linear;
class-weighted cross-entropy, Adam 1e-3, 40 epochs, seed 0) on one-hot sequences, fit on the whole train split and
scored on the whole id_test / ood_test splits every 10 epochs. No LLM and no encoder: an upper reference for what a
DNA encoder trained on these 1,188 records could hand the LLM. Prints JSON (kept as cnn_probe.json).

    python docs/measurements/bridge/cnn_probe.py jaspar_tf_class jaspar_tf_class_1kb > cnn_probe.json
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from bioreason.training.arguments import DataArguments
from bioreason.training.task import load_task

SPLITS = ("train", "id_test", "ood_test")
BASES = {"A": 0, "C": 1, "G": 2, "T": 3}


def one_hot(seq: str) -> np.ndarray:
    """[4, L] one-hot in A, C, G, T order (N is all zeros), so flipping both axes gives the reverse complement."""
    x = np.zeros((4, len(seq)), np.float32)
    for i, base in enumerate(seq):
        if base in BASES:
            x[BASES[base], i] = 1
    return x


class SiteScanner(torch.nn.Module):
    """Convolution filters as motif detectors, the best match anywhere on either strand per filter."""

    def __init__(self, classes: int, filters: int = 64, width: int = 12):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, filters, width)
        self.drop = torch.nn.Dropout(0.3)
        self.out = torch.nn.Linear(filters, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        strands = [self.conv(s).relu().amax(-1) for s in (x, x.flip(1).flip(2))]
        return self.out(self.drop(torch.maximum(*strands)))


def probe(benchmark: str, epochs: int = 40) -> dict:
    torch.manual_seed(0)
    dataset, _ = load_task(DataArguments(dataset=f"benchmark:{benchmark}"))
    labels = sorted(set(dataset["train"]["answer"]))
    x = {s: torch.from_numpy(np.stack([one_hot(r["dna"][0]) for r in dataset[s]])) for s in SPLITS}
    y = {s: torch.tensor([labels.index(a) for a in dataset[s]["answer"]]) for s in SPLITS}
    counts = torch.bincount(y["train"]).float()
    class_weight = counts.sum() / counts / len(counts)  # each class weighs as much in the loss as the others
    model = SiteScanner(len(labels))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-4)
    curve = {}
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(y["train"]))
        for start in range(0, len(order), 32):
            batch = order[start:start + 32]
            loss = torch.nn.functional.cross_entropy(model(x["train"][batch]), y["train"][batch], weight=class_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch % 10 == 0:
            model.eval()
            with torch.no_grad():
                curve[epoch] = {s: round(float((model(x[s]).argmax(-1) == y[s]).float().mean()), 3) for s in SPLITS}
    majority = int(counts.argmax())
    return {"majority": {s: round(float((y[s] == majority).float().mean()), 3) for s in SPLITS[1:]},
            "accuracy_by_epoch": curve}


if __name__ == "__main__":
    print(json.dumps({name: probe(name) for name in sys.argv[1:]}, indent=1))
