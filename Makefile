# nlwu-bench. `make setup` creates .venv with the pinned environment (also run on first use by every target).
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1

RESULTS ?= deepobs_results_medium_budget
OUT ?= reports
BASELINES ?=
REFERENCE ?= ../shared/reference
CACHE ?= .cache
CONFIG ?= configs/reproduce_default.yaml
DATA_DIR ?= data

.PHONY: setup test test-slow lint figures paper-figures bench bench-analysis bench-optimizers bench-testproblems \
	bench-data bench-runners data run reproduce clean fidelity

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	touch $@

setup: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# Data sets (download, verify, convert; see testproblems/data/README.md): make data [DATA_DIR=data]
# [SOURCE=/usr/share/datasets/fashion-mnist] [ONLY="fmnist ..."]. SOURCE: a folder holding official files.
SOURCE ?=
ONLY ?=
data: $(STAMP)
	$(PY) -m testproblems prepare-data --data-dir "$(DATA_DIR)" $(if $(strip $(SOURCE)),--source "$(SOURCE)") \
		$(foreach o,$(ONLY),--only $(o))

figures: $(STAMP)
	$(PY) -m analysis $(RESULTS) --out $(OUT) $(if $(strip $(BASELINES)),--baselines $(BASELINES))

# The study of $(CONFIG) (default: quadratic_deep at the paper's medium budget, 6 optimizers, 354 runs) into
# $(RESULTS), resumable, then `make figures` on it. PRESET=smoke, WORKERS=N, BACKEND=ray, ADDRESS=... optional.
PRESET ?=
WORKERS ?=
BACKEND ?= local
ADDRESS ?=
reproduce: $(STAMP)
	$(PY) -m runners sweep $(CONFIG) --out $(RESULTS) --backend $(BACKEND) $(if $(strip $(PRESET)),--preset $(PRESET)) \
		$(if $(strip $(WORKERS)),--workers $(WORKERS)) $(if $(strip $(ADDRESS)),--address $(ADDRESS))
	$(MAKE) --no-print-directory figures RESULTS=$(RESULTS) OUT=$(OUT)

# One training run: make run PROBLEM=quadratic_deep OPTIMIZER=PowKernelGradientDescentOptimizer \
#   HP="learning_rate=0.01 power=0.5" [SEED=42] [EPOCHS=N] [OUT=results] (OUT here defaults to results/).
PROBLEM ?=
OPTIMIZER ?=
HP ?=
SEED ?= 42
EPOCHS ?=
RUN_OUT = $(if $(filter command line environment,$(origin OUT)),$(OUT),results)
run: $(STAMP)
	$(PY) -m runners run --problem "$(PROBLEM)" --optimizer "$(OPTIMIZER)" $(foreach h,$(HP),--hp "$(h)") \
		--seed $(SEED) $(if $(strip $(EPOCHS)),--epochs $(EPOCHS)) --out "$(RUN_OUT)" \
		$(if $(filter command line environment,$(origin DATA_DIR)),--data-dir "$(DATA_DIR)")

# Unpack the paper's released results once into $(CACHE)/reference, then analyse them.
$(CACHE)/reference/.unpacked:
	mkdir -p $(CACHE)/reference
	tar -xJf $(REFERENCE)/paper_results_medium_budget.tar.xz -C $(CACHE)/reference
	tar -xJf $(REFERENCE)/paper_results_removed_l2.tar.xz -C $(CACHE)/reference
	touch $@

paper-figures: $(STAMP) $(CACHE)/reference/.unpacked
	$(PY) -m analysis $(CACHE)/reference/paper_results_medium_budget $(CACHE)/reference/paper_results_removed_l2 \
		--out $(OUT) $(if $(strip $(BASELINES)),--baselines $(BASELINES))

bench-analysis: $(STAMP) $(CACHE)/reference/.unpacked
	$(PY) bench/bench_analysis.py

bench-optimizers: $(STAMP)
	$(PY) bench/bench_optimizers.py

# step throughput of fmnist_2c2d and cifar10_3c3d vs DeepOBS' PyTorch nets (installs the CPU torch wheel on demand)
bench-testproblems: $(STAMP)
	$(PY) bench/bench_testproblems.py $(BENCH_ARGS)

# our NumPy CIFAR-10 input pipeline vs DeepOBS' tf.data pipeline on the same (synthetic) files
bench-data: $(STAMP)
	$(PY) bench/bench_data.py $(BENCH_ARGS)

bench: bench-analysis bench-optimizers bench-testproblems bench-data bench-runners

# default study wall time (BENCH_ARGS="--study-fraction 0.2" to time a share), pool efficiency, one run vs DeepOBS TF1
bench-runners: $(STAMP)
	$(PY) bench/bench_runners.py $(BENCH_ARGS)

# Real-data evidence (issue 17): fmnist_2c2d (GD, M, MN) and fmnist_vae (GD) at the paper's chosen settings,
# seeds 42-44, first 5 epochs, against the paper's 10 seeds (mean ± 3 se); needs dataset-fashion-mnist.
# Resumable: runs are kept in $(CACHE)/fidelity. 12 runs; a 5-epoch fmnist_2c2d run takes ~6 min on 2 idle cores.
fidelity: $(STAMP)
	$(PY) tests/deepobs_oracle/fidelity.py --out $(CACHE)/fidelity

clean:
	rm -rf $(CACHE) reports
