"""p6_quickstart_s: wall time of the quickstart main job (`bioreason run pipeline --config
recipes/configs/quickstart.yaml`: CPT -> SFT -> GRPO of SmolLM2-135M + AntiBERTy on antibody_chain, ID / OOD after each
stage) in a fresh process, in the precision `bf16: auto` picks here, with an empty feature cache (the converted GGUF
LLM in $BIOREASON_CACHE is reused, as on any run after the first). The run's own metrics come with the figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from bench.common import Result, precision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "recipes/configs/quickstart.yaml"


def run() -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "quickstart")
        command = [sys.executable, "-m", "bioreason.cli", "run", "pipeline", "--config", CONFIG, f"output_dir={out}",
                   f"feature_cache_dir={os.path.join(tmp, 'features')}"]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(f"quickstart failed ({proc.returncode}): {proc.stderr[-2000:]}")
        with open(os.path.join(out, "metrics.json"), encoding="utf-8") as fh:
            metrics = json.load(fh)
    stages = {s["name"]: {"seconds": s["seconds"], "steps": s["steps"], "id_accuracy": s["id"].get("accuracy"),
                          "ood_accuracy": s["ood"].get("accuracy")} for s in metrics["stages"]}
    return Result(
        "p6_quickstart_s", seconds, 600.0, "s",
        f"the quickstart main job ({CONFIG}), wall time of a fresh process, {precision().name}",
        {"precision": metrics.get("precision"), "stages": stages,
         "command": "bioreason run pipeline --config " + CONFIG}, lower_is_better=True)
