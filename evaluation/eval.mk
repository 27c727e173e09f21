# eval.mk — Makefile fragment for the SQuAD 2.0 evaluation (issue 4), included by the top-level
# Makefile (`include evaluation/eval.mk`); expects PYTHON (the project venv's python) from there.
#   make eval LIMIT=200                 200 dev questions through a server started by `make serve`
#   make eval LIMIT=200 EVAL_REFERENCE=1  and compare with in-process transformers generate
# Variables: LIMIT (questions, spread over the dev set; empty = all 11873), URL (gRPC address,
# default localhost:$(GRPC_PORT) or localhost:8001), EVAL_REFERENCE (non-empty: --reference),
# EVAL_CONCURRENCY (batches in flight, default 4), EVAL_ARGS (more `python -m evaluation` options).
LIMIT ?=
URL ?= localhost:$(or $(GRPC_PORT),8001)
EVAL_CONCURRENCY ?= 4
EVAL_REFERENCE ?=
EVAL_ARGS ?=
EVAL_OPTIONS = --url $(URL) --concurrency $(EVAL_CONCURRENCY) $(if $(LIMIT),--limit $(LIMIT)) \
  $(if $(EVAL_REFERENCE),--reference) $(EVAL_ARGS)

.PHONY: eval

eval:  ## SQuAD 2.0 dev EM/F1 and throughput of the running server (LIMIT=N, URL=host:port, EVAL_REFERENCE=1)
	@test -n "$(PYTHON)" || { echo "eval: PYTHON is not set (the top-level Makefile defines it)" >&2; exit 2; }
	$(PYTHON) -m evaluation $(EVAL_OPTIONS)
