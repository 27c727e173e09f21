# T5 SQuAD v2 question answering on Triton: setup, demo model, export, serve, test.
# `make help` lists the targets. Variables: MODEL, DEMO, TARGET, PRECISION, HTTP_PORT, GRPC_PORT, METRICS_PORT.

VENV      ?= .venv
PYTHON    := $(VENV)/bin/python
MODEL     ?= mrm8488/t5-base-finetuned-squadv2
DEMO      ?= base
TARGET    ?= cpu
REPOSITORY ?= model_repository
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
SETUP_STAMP := $(VENV)/.setup-done

include deploy/deploy.mk
include evaluation/eval.mk
include loadtest/loadtest.mk

# Empty: the target's default (cpu fp32, GPU targets bf16). What each target takes is listed once,
# in export/precision.py; the commands below check it (cpu: fp32|int8, engines and gpu-check: bf16|fp32).
PRECISION ?=
PRECISION_ARG = $(if $(PRECISION),--precision $(PRECISION))

.PHONY: help setup demo-model export repository engines serve test test-unit test-deploy bench gpu-check gpu-kit clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

setup: $(SETUP_STAMP)  ## create .venv with the pinned dependencies
$(SETUP_STAMP): requirements/server.txt requirements/loadtest.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip==24.3.1
	$(PYTHON) -m pip install --quiet -r requirements/server.txt
	$(PYTHON) -m pip install --quiet -r requirements/loadtest.txt
	$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	$(PYTHON) -m pip check
	touch $@

demo-model: setup  ## build a random-weight checkpoint: DEMO=base (t5-base config) or DEMO=tiny
	$(PYTHON) -m export demo-model --size $(DEMO) --output build/models/demo-$(DEMO)

export: setup  ## export MODEL to validated ONNX, install it, write TARGET's configs (no demo fallback); PRECISION=int8
	$(PYTHON) -m serving.pipeline build --model $(MODEL) --target $(TARGET) --repository $(REPOSITORY) $(PRECISION_ARG)

repository: setup  ## regenerate the config.pbtxt files for TARGET from the exported graphs
	$(PYTHON) -m serving.repository --target $(TARGET) --repository $(REPOSITORY)

engines: setup  ## TensorRT engines for TARGET=gpu-tensorrt, built in the Triton image (Docker + GPU); PRECISION=bf16|fp32
	$(PYTHON) -m serving.docker engines --model $(MODEL) $(PRECISION_ARG)

serve: setup  ## export MODEL (demo model if the Hub is unreachable), start Triton, answer a question; PRECISION=int8
	$(PYTHON) -m serving.serve --model $(MODEL) --demo-fallback $(DEMO) --target $(TARGET) $(PRECISION_ARG) \
	  --repository $(REPOSITORY) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

test: setup deploy-tools  ## run all tests (starts its own tritonserver on free ports; chart checks offline)
	$(PYTHON) -m pytest -q tests

test-unit: setup  ## only the unit layer (tests/unit/): no tritonserver, no export; under a minute
	$(PYTHON) -m pytest -q -m unit tests

bench: setup  ## serving benchmark vs transformers, optimum and CTranslate2 on the demo t5-base; writes docs/benchmarks.md
	$(PYTHON) -m pip install --quiet -r requirements/bench.txt
	bash bench/install_perf_analyzer.sh
	test -f build/models/demo-base/config.json || $(PYTHON) -m export demo-model --size base --output build/models/demo-base
	$(PYTHON) -m serving.pipeline build --model build/models/demo-base --repository $(REPOSITORY)
	$(PYTHON) -m bench.serving --checkpoint build/models/demo-base --repository $(REPOSITORY)

gpu-check: setup  ## on a GPU machine: gpu-torch served fp32/bf16 vs generate (agreement, latency, answers/s); docs/gpu-check.md
	$(PYTHON) -m bench.gpu_check $(PRECISION_ARG)

KIT_PYTHON ?= 3.12
gpu-kit: setup  ## gpu-check for a GPU machine without network: build/t5qa-gpu-kit.tar.xz (< 60 MB); there: t5qa-gpu-kit/run
	$(PYTHON) -m bench.gpu_kit --python-version $(KIT_PYTHON)

clean:  ## remove generated models, exports and configs (contract/files.py lists them; keeps .venv)
	if [ -x $(PYTHON) ]; then $(PYTHON) -m serving.pipeline clean --repository $(REPOSITORY) --build build; \
	else rm -rf build; fi
