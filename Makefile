# ltbench: `make demo` runs a quick real benchmark and writes an HTML report;
# `make test` runs the test suite. Both create the virtual environment first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test clean

venv: $(VENV)/.installed

# torchvision's wheels need the package index's own (CUDA) torch build, which also runs on
# CPU-only machines, so torch is resolved from the index, never pinned to a local CPU wheel.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,slurm]'
	touch $@

# Every method on synthetic-lt (generated, nothing to download), two imbalance factors, two
# seeds, a short schedule. Re-running it trains nothing new.
DEMO_SET := --set n_max=100 --set test_per_class=20 --set batch_size=32
demo: venv
	$(BIN)/ltbench run --methods all --datasets synthetic-lt --imb 50,10 --seeds 0,1 \
		--epochs 6 $(DEMO_SET)
	$(BIN)/ltbench report
	@echo "open reports/index.html"

test: venv
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) results/runs results/curves results/eps results/eps_summary \
		results/resume results/claims results/launch results/slurm \
		reports/*.html reports/*.md reports/*.tex reports/data
