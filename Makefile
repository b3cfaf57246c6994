# Two entry points for a newcomer: `make demo` and `make test`. Each creates .venv, installs the CPU build of
# torch==2.13.0 first (an unpinned torch would pull a multi-GB CUDA build), then this project, then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/zkref demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The whole benchmark suite (benchmarks/README.md): every table, plot and results/performance.md from one run.
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS=--quick
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
