# Two entry points for a newcomer: `make demo` and `make test`. Each creates .venv, installs the CPU build of
# torch 2.13.0 first, then this project, then runs.
#
# torch is pinned as the CPU build itself, torch==2.13.0+cpu: PyPI's torch==2.13.0 for Linux is the CUDA build, which
# pulls multi-GB nvidia-* packages. PyPI never carries "+cpu" builds, so the pin is tried first with the indexes and
# wheel folders pip is configured with (a machine that keeps the CPU wheel on disk, as this project's machines do in
# their pip find-links folder, installs it from there and never asks PyTorch's index); where none has it (a fresh
# machine: PyPI says "no matching distribution" at once), it comes from PyTorch's CPU index, TORCH_INDEX, added as an
# extra index so torch's own dependencies still come from PyPI. Either way the same build, 2.13.0+cpu, or an error.
# Checked here in throwaway venvs: with this machine's pip configuration (from the wheel folder), and with no pip
# configuration at all (the first command fails, the second installs from a CPU index with dependencies from PyPI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install demo test bench plots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet '$(TORCH)' 2>/dev/null || \
		$(BIN)/python -m pip install --quiet '$(TORCH)' --extra-index-url $(TORCH_INDEX)
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

# Redraw the plots and results/performance.md from the JSON results already there (seconds; nothing is measured).
plots: $(STAMP)
	$(BIN)/python benchmarks/plots.py
	$(BIN)/python benchmarks/performance.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
