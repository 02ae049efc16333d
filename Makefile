# ltbench: `make demo` runs a quick real benchmark and writes an HTML report (reports/demo);
# `make test` runs the test suite, `make test-fast` all but its slow tests (about a minute);
# `make test-gpu-build` runs the CUDA-path tests under the GPU machine's torch build.
# Each creates its virtual environment first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv venv-gpu-build demo reference-report test test-fast test-gpu-build clean

venv: $(VENV)/.installed

# torchvision's wheels need the package index's own (CUDA) torch build, which also runs on
# CPU-only machines, so torch is resolved from the index, never pinned to a local CPU wheel.
# The launcher extras are installed so that their tests run: submitit, and ray (an 80 MB
# wheel, 240 MB installed) for the tests that start a local Ray cluster.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,slurm,ray]'
	touch $@

# One method of each family on synthetic-lt (generated, nothing to download), three seeds, a
# 20-epoch schedule on ResNet-8 (`ltbench demo`); re-running it trains nothing new.
demo: venv
	$(BIN)/ltbench demo

# The project's reference leaderboard (committed): the report of results/reference/, to be
# regenerated whenever a reference run lands (tests/test_reference_results.py checks it is).
reference-report: venv
	rm -rf reports/reference
	$(BIN)/ltbench report --results results/reference --out reports/reference

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

# The GPU machine's build (issue 12): torch 2.11.0 and torchvision 0.26.0, in a second venv
# beside the main one (which takes the newest torch the index allows). PyPI has only the CUDA
# wheels of torch for Linux, and `import torch` needs their nvidia libraries even on a CPU-only
# machine, so the whole set is installed (about 2.6 GB to download, 5.2 GB on disk).
GPU_BUILD_VENV ?= .venv-torch2.11
GPU_BUILD_PINS := torch==2.11.0 torchvision==0.26.0
GPU_BUILD_TESTS := tests/test_engine.py tests/test_packs.py tests/test_meta_methods.py \
	tests/test_resume.py tests/test_two_stage.py tests/test_fake_cuda.py

venv-gpu-build: $(GPU_BUILD_VENV)/.installed

$(GPU_BUILD_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(GPU_BUILD_VENV)
	$(GPU_BUILD_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GPU_BUILD_VENV)/bin/python -m pip install --quiet $(GPU_BUILD_PINS) -e '.[test]'
	touch $@

test-gpu-build: venv-gpu-build
	$(GPU_BUILD_VENV)/bin/python -m pytest $(GPU_BUILD_TESTS)

clean:
	rm -rf $(VENV) $(GPU_BUILD_VENV) results/runs results/curves results/eps \
		results/eps_summary results/resume results/claims results/launch results/slurm \
		reports/*.html reports/*.md reports/*.tex reports/data
