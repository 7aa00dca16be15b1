# Two commands set everything up on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of PyTorch, installed before the project so that pip never resolves a bare
# `torch` to a multi-GB CUDA build. On a GPU machine: make install TORCH='torch==2.13.0 --index-url ...'
TORCH  ?= torch==2.13.0
SPEC   ?= examples/machine-failure.yaml
PYTEST_ARGS ?=
# `make test` and `make test-fast` run the test files in two processes (pytest-xdist; under `make test` each
# has its own local Ray): 1.4-1.5x faster than one on 2 cores (benchmarks/RESULTS.md, "Test suite time with
# pytest-xdist"); a file stays in one process (its module fixtures are set up once), the files that use the
# serving fixtures share one (Serve and its bundles are set up once), and the slowest files go first
# (tests/conftest.py).
# One process: make test PYTEST_XDIST=
PYTEST_XDIST ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: install run test test-fast lint clean data

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,text]'
	touch $@

install: $(VENV)/.installed

# The example data sets. A folder that already holds data is left as it is; one written here gets a mark
# (EXAMPLE_MARK, a hidden file the data readers skip) that lets `make clean` tell it from data of your own.
EXAMPLE_DATA := data/telemetry:examples/telemetry.py data/process-yield:examples/process_yield.py \
                data/work-orders:examples/work_orders.py
EXAMPLE_MARK := .written-by-make-data

data: install
	@for pair in $(EXAMPLE_DATA); do dir=$${pair%%:*}; script=$${pair#*:}; \
	  if [ -n "$$(ls -A $$dir 2>/dev/null)" ]; then echo "$$dir already holds data; keeping it"; \
	  else $(PY) $$script --out $$dir && touch $$dir/$(EXAMPLE_MARK) || exit 1; fi; done

run: data
	$(VENV)/bin/trainyard run $(SPEC) --no-serve

# The layering contracts (pyproject.toml [tool.importlinter]): a violation names the offending import.
lint: install
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

# The tests that start no Ray (spec, metrics, preprocessing, bundle, request checks, plans, the loop on
# tensors), in two processes like `make test`: 1.5-4 minutes on 2 cores (~560 tests). `make test` runs everything.
test-fast: lint
	$(PY) -m pytest -m "not ray and not gpu" $(PYTEST_XDIST) $(PYTEST_ARGS)

# Removes only what trainyard generates and can make again: the caches, and each example data set that
# `make data` wrote (its mark there, and no file it did not write). data/ otherwise, and runs/ (your trained
# bundles), are never touched.
clean:
	rm -rf .pytest_cache
	@for pair in $(EXAMPLE_DATA); do dir=$${pair%%:*}; \
	  [ -d $$dir ] || continue; \
	  if [ -f $$dir/$(EXAMPLE_MARK) ] && [ -z "$$(find $$dir -mindepth 1 ! -name $(EXAMPLE_MARK) \
	       ! -name 'part-[0-9][0-9][0-9].parquet' ! -name 'part-[0-9][0-9][0-9].csv')" ]; then \
	    rm -rf $$dir && echo "removed $$dir (make data writes it again)"; \
	  else echo "kept $$dir: make data did not write it, or it holds files of yours"; fi; done
