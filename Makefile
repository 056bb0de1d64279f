# Everything a developer or CI runs. The app/test venv (.venv) and the SAM CLI venv (.venv-tools) are separate
# because the SAM CLI pins its own boto3.
PYTHON ?= python3
VENV := .venv
TOOLS := .venv-tools
SAM := $(TOOLS)/bin/sam
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= eu-west-1

ENV ?= default
STACK ?= $(if $(filter prod,$(ENV)),whereby-bridge-prod,whereby-bridge)

.PHONY: help venv tools test lint format validate build local demo bench clean deploy outputs logs redrive close-all \
	migrate-secrets

help:
	@echo "make local     run the whole stack on 127.0.0.1 (no AWS account, no Docker)"
	@echo "make demo      boot the local stack, send a sample Kommo webhook, show the room and the note"
	@echo "make test      unit and integration tests (what CI runs)"
	@echo "make lint      ruff"
	@echo "make bench     every benchmark; figures into bench/RESULTS.md"
	@echo "make validate  sam validate --lint"
	@echo "make build     sam build (arm64, python3.13, no Docker needed)"
	@echo "make deploy    sam deploy (ENV=prod for the prod environment of samconfig.toml)"
	@echo "make outputs   the deployed stack's URLs, secret and queues"
	@echo "make logs      tail the deployed functions' logs"
	@echo "make redrive   move dead-lettered jobs back to the job queue"
	@echo "make close-all delete every live room (before removing the stack)"
	@echo "make migrate-secrets  move the first version's single secret into the per-peer secrets (TEAM=<id>)"

venv: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

tools: $(TOOLS)/.installed
$(TOOLS)/.installed: .ci/tools-requirements.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check -r .ci/tools-requirements.txt
	touch $@

test: venv
	$(VENV)/bin/pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

validate: tools
	$(SAM) validate --lint

# The layer's Makefile runs "python3 -m pip": the tools venv comes first on PATH so that pip is there.
build: tools
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(SAM) build

bench: venv
	$(VENV)/bin/python -m bench

deploy: build
	$(SAM) deploy --config-env $(ENV) $(if $(GUIDED),--guided)

outputs: venv
	$(VENV)/bin/python -m devstack.operations outputs --stack $(STACK)

logs: tools
	$(SAM) logs --stack-name $(STACK) --tail

redrive: venv
	$(VENV)/bin/python -m devstack.operations redrive --stack $(STACK)

close-all: venv
	$(VENV)/bin/python -m devstack.operations close-all --stack $(STACK)

migrate-secrets: venv
	$(VENV)/bin/python -m devstack.operations migrate-secrets --stack $(STACK) $(if $(TEAM),--team $(TEAM))

local: venv
	$(VENV)/bin/python -m devstack

demo: venv
	$(VENV)/bin/python -m devstack.demo

clean:
	rm -rf .aws-sam $(VENV) $(TOOLS) .pytest_cache .ruff_cache
