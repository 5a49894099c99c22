# Two commands a newcomer needs: `make demo` and `make test`. Both set themselves up.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTHON ?= python3

.PHONY: install sysdeps lint test test-fast bench bench-train bench-fullsize bench-serve eval-robustness soak flywheel flywheel-baseline demo train-demo train-single-camera clean

# Headless MuJoCo rendering on CPU needs OSMesa (Debian libosmesa6).
export MUJOCO_GL ?= osmesa

# torch first, from the local CPU build; constraints.txt keeps any other package from moving it.
sysdeps:
	@dpkg -s libosmesa6 >/dev/null 2>&1 || (apt-get update && apt-get install -y libosmesa6) || \
	  (echo "libosmesa6 is missing and could not be installed (run as root: apt-get install -y libosmesa6)" && exit 1)

$(VENV)/.installed: pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[dev,ros,sim,serve]'
	touch $@

install: sysdeps $(VENV)/.installed

# ruff (lint, format), import-linter (layers: the library never imports ROS; no cycles), mypy (strict on the
# runtime and the node). Configuration in pyproject.toml.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The whole suite on pytest-xdist's workers (docs/development.md), the 15 slowest tests, and coverage of the library
# and the node measured in every process the tests start; below COVERAGE_FLOOR it fails.
TEST_WORKERS ?= 2
COVERAGE_FLOOR ?= 88
test: install
	rm -f .coverage .coverage.*
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15 --junitxml=out/test-results.xml \
		--cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR) tests

# The inner loop: everything but DDS, colcon, Docker and the slow tests (under 90 s on 2 cores).
test-fast: install
	$(PY) -m pytest -q -m "not dds and not colcon and not docker and not slow" tests

bench: install
	$(PY) -m bench.streaming
	$(PY) -m bench.engines
	$(PY) -m bench.node

# Fine-tuning modes (step time, memory) on kosmos2_small, and memory of lazy data for 200 and 2,000 episodes.
bench-train: install
	$(PY) -m bench.training

# Issue 19's table: Kosmos-2 and PaliGemma-3B at full size (random weights) in every engine, dtype and export, and a
# LoRA step: peak memory, time and action difference, into bench/results/fullsize.md. Not in CI: about 2.5 hours on two
# CPU cores, up to 21 GiB of memory and 35 GB of disk under out/bench_memory; resumes where it was stopped.
bench-fullsize: install
	$(PY) -m bench.fullsize

# Issue 22's table: 1, 2, 4, 8 simulated robots (a process each, two 30 Hz cameras) sharing one `robovlm serve` with
# batching off and on, against a local engine each; kosmos2_small, into bench/results/serve.md. Not in CI: about
# 9 minutes on two CPU cores.
bench-serve: install
	$(PY) -m bench.serve

# Issue 20's table: held-out closed-loop episodes of models/demo under inference latency x chunk mode x perturbation
# (camera latency 50 ms) plus the ablations in the target condition, into bench/results/closed_loop.md and .png,
# with a contact sheet of the strong perturbation. EPISODES per cell (default 40: about 15 minutes on two cores).
EPISODES ?= 40
eval-robustness: install
	$(PY) -m bench.robustness --episodes $(EPISODES)

# The node for DURATION seconds (default 10 minutes) on two 640x480 cameras at 30 Hz, beside LOAD CPU-bound jobs.
DURATION ?= 600
LOAD ?= 0
soak: install
	$(PY) -m bench.soak --duration $(DURATION) --load $(LOAD)

# Closed loop over ROS: the trained demo checkpoint drives the simulated robot through robovlm_node.
# LATENCY_MS / CAMERA_LATENCY_MS / JITTER_MS: a slow model and a late camera (robovlm_node.tools.sim_node).
LATENCY_MS ?= 0
CAMERA_LATENCY_MS ?= 0
JITTER_MS ?= 0
# ENGINE=remote: the model in a local `robovlm serve` (Ray Serve on loopback), the node as engine:=remote.
ENGINE ?= torch
demo: install
	$(PY) -m robovlm_node.tools.demo --inference-latency-ms $(LATENCY_MS) --camera-latency-ms $(CAMERA_LATENCY_MS) \
		--latency-jitter-ms $(JITTER_MS) --engine $(ENGINE)

# Reproduces models/demo (SEED=0): 200 expert episodes in the plain room (layout seeds from 0) and 200 in randomized
# rooms (`--perturb strong`, layout seeds from 1000), then `robovlm train` at its defaults (2500 steps, lr 3e-4
# after 300 warm-up steps) with light and noise augmentation, then 40 held-out closed-loop episodes. About 50
# minutes on 2 CPU cores (15 of collection, 35 of training). SEED=1 make train-demo trains another seed.
SEED ?= 0
train-demo: install
	rm -rf out/sim_data out/demo_ckpt
	$(VENV)/bin/robovlm collect-sim out/sim_data --episodes-per-scenario 25 --seed-offset 0
	$(VENV)/bin/robovlm collect-sim out/sim_data --episodes-per-scenario 25 --seed-offset 1000 --perturb strong
	$(VENV)/bin/robovlm train models/configs/demo.json --data out/sim_data --out out/demo_ckpt --seed $(SEED) \
	  --augment-light 0.3 --augment-noise 4
	mkdir -p models/demo  # the files below are replaced; the hand-written model card README.md stays
	cp out/demo_ckpt/config.json out/demo_ckpt/model.safetensors out/demo_ckpt/stats.json \
	  out/demo_ckpt/metrics.json out/demo_ckpt/loss_curve.png models/demo/
	$(VENV)/bin/robovlm eval-sim --checkpoint models/demo --episodes 40

# The user's data shape: one camera, no joint states, three action fields (linear.x, linear.y, angular.z); the
# demo's 200 plain-room expert episodes and its training settings (without light and noise) at 1500 steps, which this model needs for every seed
# measured (bench/results/training.md; about 15 minutes of training on this CPU), then 40 held-out closed-loop
# episodes. SEED=3 make train-single-camera picks the seed.
train-single-camera: install
	test -d out/sim_plain || $(VENV)/bin/robovlm collect-sim out/sim_plain --episodes-per-scenario 25 --seed-offset 0
	$(VENV)/bin/robovlm train models/configs/single_camera.json --data out/sim_plain --out out/single_camera_ckpt \
	  --seed $(SEED) --steps 1500 --action-fields linear.x,linear.y,angular.z
	$(VENV)/bin/robovlm eval-sim --checkpoint out/single_camera_ckpt --episodes 40

# Issue 36's table: DAgger in simulation through the node over ROS (robovlm_node.tools.flywheel), in randomized
# rooms (--perturb mild: light, textures, camera mounts and faults, base lag and slip) so that demonstrations alone
# need many frames: a policy from 1 demonstration per scenario trained to the data (2500 steps), 3 rounds of 24
# recorded rollouts with a simulated operator taking over, each round fine-tuning the last round's policy for 1000
# steps on everything so far. Into bench/results/flywheel_mild_seed$(FLYWHEEL_SEED).md (bench/results/flywheel.md
# puts the seeds beside each other). Not in CI: about 1.5 hours on two CPU cores; resumes where it was stopped.
# flywheel-baseline: the curve beside it, computed once (about 1 hour), policies from 6 and 12 demonstrations per
# scenario in the same work directory (round 0 is the 1-demonstration point), into
# bench/results/flywheel_baseline_mild_seed$(FLYWHEEL_SEED).md.
FLYWHEEL_SEED ?= 0
FLYWHEEL = $(PY) -m robovlm_node.tools.flywheel --out out/flywheel_mild_seed$(FLYWHEEL_SEED) --perturb mild \
  --steps 2500 --finetune-steps 1000 --seed $(FLYWHEEL_SEED)
flywheel: install
	$(FLYWHEEL) --baseline "" --results bench/results/flywheel_mild_seed$(FLYWHEEL_SEED).md

flywheel-baseline: install
	$(FLYWHEEL) --rounds 0 --baseline 6,12 --results bench/results/flywheel_baseline_mild_seed$(FLYWHEEL_SEED).md

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
