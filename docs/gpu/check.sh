#!/usr/bin/env bash
# The GPU check, one call on a lent GPU machine (the device tool), from the repo root, with .gpu/ carried:
#   PYTHONPATH=. .venv/bin/python docs/gpu/make_tiny_quickstart.py .gpu   # here: tiny stand-ins + the built benchmark
#   (wheels the GPU image lacks go in .gpu/whl; bitsandbytes unpacked, CUDA 13 library only, in .gpu/bnb)
#   bash docs/gpu/check.sh                                               # there; logs land in $OUT
# It runs `pytest -m gpu` (bf16 CUDA, flash-attention 2, bitsandbytes 4-bit, auto precision, the compact LM head) and
# one SFT + one GRPO step of the quickstart pipeline on CUDA (docs/gpu/quickstart_tiny.yaml). Results: docs/gpu/README.md.
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu/bnb:$PWD HF_HUB_OFFLINE=1 BIOREASON_CACHE=/tmp/brcache PYTHONUNBUFFERED=1
nvidia-smi | tee "$OUT/nvidia-smi.txt"
python3 - <<'PY' 2>&1 | grep -v gemm_4bit | tee "$OUT/env.txt"
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0),
      "bf16", torch.cuda.is_bf16_supported())
for name in ("transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes"):
    print(name, importlib.import_module(name).__version__)
try:
    import flash_attn
    print("flash_attn", flash_attn.__version__)
except ImportError as err:
    print("flash_attn: not importable:", err)
PY
start=$(date +%s)
python3 -m pytest -m gpu tests/test_gpu.py -v -rs -p no:cacheprovider 2>&1 | grep -v gemm_4bit | tee "$OUT/gpu_tests.log"
echo "pytest -m gpu: $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu_tests.log"
start=$(date +%s)
python3 -m bioreason.cli run pipeline --config docs/gpu/quickstart_tiny.yaml output_dir=/tmp/qs 2>&1 \
  | grep -v "gemm_4bit\|it/s\]\|ex/s\]" > "$OUT/quickstart.log"
echo "pipeline exit ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s" | tee -a "$OUT/quickstart.log"
tail -n 25 "$OUT/quickstart.log"
cp /tmp/qs/metrics.json "$OUT/quickstart_metrics.json" 2>/dev/null
python3 - <<'PY'
import json
m = json.load(open("/tmp/qs/metrics.json"))
print("precision:", m["precision"])
for s in m["stages"]:
    print(s["name"], "steps", s["steps"], "seconds", s["seconds"], "ID", s["id"].get("accuracy"),
          "OOD", s["ood"].get("accuracy"), "reward", s.get("mean_reward"))
PY
ls /tmp/qs/final
