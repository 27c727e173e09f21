# deploy.mk — Makefile fragment for the Kubernetes deployment (issue 7), included by the top-level
# Makefile (`include deploy/deploy.mk`); expects PYTHON (the project venv's python) from there.
#   make deploy-tools   install helm, kubernetes-validate and promtool into .tools/ (idempotent)
#   make test-deploy    deploy-tools, then the offline deployment tests (tests/deploy/)
DEPLOY_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
DEPLOY_INSTALL := $(DEPLOY_MK_DIR)/tools/install.sh
DEPLOY_TESTS := tests/deploy

.PHONY: deploy-tools test-deploy

deploy-tools:  ## install helm, kubernetes-validate and promtool into .tools/
	bash $(DEPLOY_INSTALL)

test-deploy: deploy-tools  ## only the offline Kubernetes chart checks
	@test -n "$(PYTHON)" || { echo "test-deploy: PYTHON is not set (the top-level Makefile defines it)" >&2; exit 2; }
	$(PYTHON) -m pytest -q $(DEPLOY_TESTS)
