# Set-up is idempotent: every target first makes sure .venv holds the locked environment.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dor-bench-installed

.PHONY: demo test test-slow check setup clean

demo: setup  ## the main job on the embedded default
	$(BIN)/dor-bench run examples/demo.yaml

test: setup  ## the test suite (CI runs this)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

check: setup  ## lint, format, import layers, types (CI runs this before the tests)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test-slow: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

setup: $(STAMP)

# torch/torchvision are pinned in constraints.txt to the pair this project is tested with;
# pyproject.toml keeps ranges so that users' own GPU installs satisfy it.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	scripts/ensure-wordnet $(BIN)/python
	scripts/ensure-chromium || true  # the HTML report test skips, saying why, without it
	scripts/ensure-postgres || true  # `dor-bench server` and its tests; they say how without it
	touch $(STAMP)

clean:
	rm -rf $(VENV)
