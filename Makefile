# Two commands set everything up on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of PyTorch, installed before the project so that pip never resolves a bare
# `torch` to a multi-GB CUDA build. On a GPU machine: make install TORCH='torch==2.13.0 --index-url ...'
TORCH  ?= torch==2.13.0
SPEC   ?= examples/machine-failure.yaml
PYTEST_ARGS ?=

.PHONY: install run test test-fast lint clean data

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

data: install
	$(PY) examples/telemetry.py --out data/telemetry
	$(PY) examples/process_yield.py --out data/process-yield

run: data
	$(VENV)/bin/trainyard run $(SPEC) --no-serve

# The layering contracts (pyproject.toml [tool.importlinter]): a violation names the offending import.
lint: install
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The tests that start no Ray (spec, metrics, preprocessing, bundle, request checks, plans, the loop on
# tensors): under a minute. `make test` runs everything.
test-fast: lint
	$(PY) -m pytest -m "not ray and not gpu" $(PYTEST_ARGS)

clean:
	rm -rf runs data .pytest_cache
