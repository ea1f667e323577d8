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
PLUGINS ?=

.PHONY: setup test test-slow lint figures paper-figures bench bench-analysis bench-optimizers bench-testproblems \
	bench-data bench-runners bench-population gpu-check data run reproduce clean fidelity

# GPU=cuda12 also installs the pinned jax CUDA plugin (requirements-cuda12.lock), so population training runs on the
# GPU; default: cuda12 when `nvidia-smi -L` lists a GPU, else none (CPU). GPU= (empty) forces the CPU-only setup.
GPU ?= $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && echo cuda12)
ifneq ($(filter-out cuda12,$(GPU)),)
$(error GPU must be cuda12 or empty, got '$(GPU)')
endif
GPU_LOCK := $(if $(GPU),requirements-$(GPU).lock)

$(STAMP): requirements.lock pyproject.toml $(GPU_LOCK)
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	@$(if $(GPU_LOCK),$(PY) -m pip install -q --disable-pip-version-check -r $(GPU_LOCK))
	@# the `nlwu` console command (editable: it runs this checkout's code)
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

setup: $(STAMP)

# ruff, and the layers of .importlinter (which package may import which; no import cycles)
lint: $(STAMP)
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check --quiet . || { echo 'error: files not formatted: run .venv/bin/ruff format .' >&2; exit 1; }
	@$(VENV)/bin/lint-imports --no-cache

test: lint
	@$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	@$(PY) -m pytest -q -m slow

# Data sets (download, verify, convert; see testproblems/data/README.md): make data [DATA_DIR=data]
# [SOURCE=/usr/share/datasets/fashion-mnist] [ONLY="fmnist ..."]. SOURCE: a folder holding official files.
SOURCE ?=
ONLY ?=
data: $(STAMP)
	@read -ra only <<< "$$NLWU_ARG_ONLY"; args=(); for o in "$${only[@]}"; do args+=(--only "$$o"); done; \
	if [ -n "$$NLWU_ARG_SOURCE" ]; then args+=(--source "$$NLWU_ARG_SOURCE"); fi; \
	$(PY) -m testproblems prepare-data --data-dir "$$NLWU_ARG_DATA_DIR" "$${args[@]}"

# PLUGINS="a.py b.py": plugin files (or modules) registering optimizers, passed as --plugin to figures and reproduce
# NLWU_PROG: the target typed, which error lines name (`error: make figures: ...`, as `error: make run: ...`)
figures: $(STAMP)
	@read -ra results <<< "$$NLWU_ARG_RESULTS"; read -ra baselines <<< "$$NLWU_ARG_BASELINES"; args=(); \
	if [ $${#baselines[@]} -gt 0 ]; then args=(--baselines "$${baselines[@]}"); fi; \
	read -ra plugins <<< "$$NLWU_ARG_PLUGINS"; for p in "$${plugins[@]}"; do args+=(--plugin "$$p"); done; \
	NLWU_PROG="make figures" $(PY) -m analysis "$${results[@]}" --out "$$NLWU_ARG_OUT" "$${args[@]}"

# The study of $(CONFIG) (default: quadratic_deep at the paper's medium budget, 6 optimizers, 354 runs) into
# a fresh folder (below), resumable, then `make figures` on it and the verdict. PRESET=smoke, WORKERS=N, BACKEND=ray, ADDRESS=... optional.
PRESET ?=
WORKERS ?=
# POPULATION=N: N runs per jitted jax population (1 = one run at a time); empty = auto per problem and device
POPULATION ?=
BACKEND ?= local
ADDRESS ?=
# RESULTS here defaults to a fresh folder, results/<config name>[_<preset>]/ (so it trains, and a smoke run never
# mixes into the medium one); then the report in $(OUT) and the verdict: the paper's claims ($(PROTOCOL) §5)
# judged on the results, and each search against the committed tree ($(REPRO_REFERENCE)) and the paper:
# $(OUT)/verdict.md|csv, its last line the headline (exit 0 whatever it says).
REPRO_REFERENCE ?= deepobs_results_medium_budget
PROTOCOL ?= ../shared/spec/protocol.md
export NLWU_RESULTS_GIVEN := $(if $(filter command line environment,$(origin RESULTS)),1)
reproduce: $(STAMP)
	@results="$$NLWU_ARG_RESULTS"; if [ -z "$$NLWU_RESULTS_GIVEN" ]; then config="$${NLWU_ARG_CONFIG##*/}"; \
		results="results/$${config%.*}$${NLWU_ARG_PRESET:+_$$NLWU_ARG_PRESET}"; fi; \
	args=(); for v in PRESET WORKERS ADDRESS POPULATION; do value="NLWU_ARG_$$v"; \
		if [ -n "$${!value}" ]; then args+=("--$${v,,}" "$${!value}"); fi; done; \
	read -ra plugins <<< "$$NLWU_ARG_PLUGINS"; plugin_args=(); \
		for p in "$${plugins[@]}"; do plugin_args+=(--plugin "$$p"); done; \
	export NLWU_PROG="make reproduce"; \
	$(PY) -m runners sweep "$$NLWU_ARG_CONFIG" --out "$$results" --backend "$$NLWU_ARG_BACKEND" "$${args[@]}" \
		"$${plugin_args[@]}" && \
	$(PY) -m analysis "$$results" --out "$$NLWU_ARG_OUT" "$${plugin_args[@]}" && \
	$(PY) -m analysis.verdict "$$results" --reference "$$NLWU_ARG_REPRO_REFERENCE" --paper "$$NLWU_ARG_PROTOCOL" \
		--out "$$NLWU_ARG_OUT"

# One training run: make run PROBLEM=quadratic_deep OPTIMIZER=PowKernelGradientDescentOptimizer \
#   HP="learning_rate=0.01 power=0.5" [SEED=42] [EPOCHS=N] [OUT=results] (OUT here defaults to results/).
PROBLEM ?=
OPTIMIZER ?=
HP ?=
SEED ?= 42
EPOCHS ?=
export NLWU_OUT_GIVEN := $(filter command line environment,$(origin OUT))
export NLWU_DATA_DIR_GIVEN := $(filter command line environment,$(origin DATA_DIR))
run: $(STAMP)
	@read -ra hps <<< "$$NLWU_ARG_HP"; args=(); for h in "$${hps[@]}"; do args+=(--hp "$$h"); done; \
	if [ -n "$$NLWU_ARG_EPOCHS" ]; then args+=(--epochs "$$NLWU_ARG_EPOCHS"); fi; \
	if [ -n "$$NLWU_DATA_DIR_GIVEN" ]; then args+=(--data-dir "$$NLWU_ARG_DATA_DIR"); fi; \
	if [ -n "$$NLWU_OUT_GIVEN" ]; then out="$$NLWU_ARG_OUT"; else out=results; fi; \
	NLWU_PROG=make $(PY) -m runners run --problem "$$NLWU_ARG_PROBLEM" --optimizer "$$NLWU_ARG_OPTIMIZER" "$${args[@]}" \
		--seed "$$NLWU_ARG_SEED" --out "$$out"

# User values reach the commands only through the environment (NLWU_ARG_<NAME>, the unexpanded text as given)
# and "$$VAR" in the recipes: make never expands them (no $(shell ...) even under make -n), the shell never
# parses them (no ; ` " breaking out), OUT="my reports" stays one argument, and the lists (RESULTS, BASELINES,
# HP, ONLY, PLUGINS, BENCH_ARGS) split on whitespace with `read -ra` (no globbing, no evaluation). `unexport` keeps make
# from expanding the originals to pass them on. Checked by tests/test_makefile_quoting.py.
USER_VARS := RESULTS OUT BASELINES REFERENCE CACHE CONFIG DATA_DIR SOURCE ONLY PRESET WORKERS BACKEND ADDRESS POPULATION \
	PROBLEM OPTIMIZER HP SEED EPOCHS BENCH_ARGS REPRO_REFERENCE PROTOCOL PLUGINS
$(foreach v,$(USER_VARS),$(eval export NLWU_ARG_$(v) := $$(value $(v))))
unexport $(USER_VARS)

# Unpack the paper's released results once into $(CACHE)/reference, then analyse them.
$(value CACHE)/reference/.unpacked:
	@mkdir -p "$$NLWU_ARG_CACHE/reference"
	@tar -xJf "$$NLWU_ARG_REFERENCE/paper_results_medium_budget.tar.xz" -C "$$NLWU_ARG_CACHE/reference"
	@tar -xJf "$$NLWU_ARG_REFERENCE/paper_results_removed_l2.tar.xz" -C "$$NLWU_ARG_CACHE/reference"
	@touch "$$NLWU_ARG_CACHE/reference/.unpacked"

paper-figures: $(STAMP) $(value CACHE)/reference/.unpacked
	@read -ra baselines <<< "$$NLWU_ARG_BASELINES"; args=(); \
	if [ $${#baselines[@]} -gt 0 ]; then args=(--baselines "$${baselines[@]}"); fi; \
	$(PY) -m analysis "$$NLWU_ARG_CACHE/reference/paper_results_medium_budget" \
		"$$NLWU_ARG_CACHE/reference/paper_results_removed_l2" --out "$$NLWU_ARG_OUT" "$${args[@]}"

bench-analysis: $(STAMP) $(value CACHE)/reference/.unpacked
	@$(PY) bench/bench_analysis.py

bench-optimizers: $(STAMP)
	@$(PY) bench/bench_optimizers.py

# step throughput of fmnist_2c2d and cifar10_3c3d vs DeepOBS' PyTorch nets (installs the CPU torch wheel on demand)
bench-testproblems: $(STAMP)
	@read -ra args <<< "$$NLWU_ARG_BENCH_ARGS"; $(PY) bench/bench_testproblems.py "$${args[@]}"

# our NumPy CIFAR-10 input pipeline vs DeepOBS' tf.data pipeline on the same (synthetic) files
bench-data: $(STAMP)
	@read -ra args <<< "$$NLWU_ARG_BENCH_ARGS"; $(PY) bench/bench_data.py "$${args[@]}"

bench: bench-analysis bench-optimizers bench-testproblems bench-data bench-runners

# default study wall time (BENCH_ARGS="--study-fraction 0.2" to time a share), pool efficiency, one run vs DeepOBS TF1
bench-runners: $(STAMP)
	@read -ra args <<< "$$NLWU_ARG_BENCH_ARGS"; $(PY) bench/bench_runners.py "$${args[@]}"

# population training (issue 30): the default study as populations vs per run, vs single runs, fmnist_2c2d on CPU
bench-population: $(STAMP)
	@read -ra args <<< "$$NLWU_ARG_BENCH_ARGS"; $(PY) bench/bench_population.py "$${args[@]}"

# on a machine with an NVIDIA GPU (after `make setup GPU=cuda12`): device, epoch times, equality, memory -> JSON
gpu-check: $(STAMP)
	@bash bench/gpu_check.sh

# Real-data evidence (issue 17): fmnist_2c2d (GD, M, MN) and fmnist_vae (GD) at the paper's chosen settings,
# seeds 42-44, first 5 epochs, against the paper's 10 seeds (mean ± 3 se); needs dataset-fashion-mnist.
# Resumable: runs are kept in $(CACHE)/fidelity. 12 runs; a 5-epoch fmnist_2c2d run takes ~6 min on 2 idle cores.
fidelity: $(STAMP)
	@$(PY) tests/deepobs_oracle/fidelity.py --out "$$NLWU_ARG_CACHE/fidelity"

clean:
	@rm -rf "$$NLWU_ARG_CACHE" reports

# Remove the caches (parsed trees, derived tables, figures, the unpacked reference trees: deepobs_tree/cache.py);
# results, reports and $(CACHE)/fidelity's training runs stay.
.PHONY: clean-cache
clean-cache:
	@NLWU_CACHE="$$NLWU_ARG_CACHE" $(PY) -m deepobs_tree.cache clear
