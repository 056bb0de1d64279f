# Everything a developer or CI runs. The app/test venv (.venv) and the SAM CLI venv (.venv-tools) are separate
# because the SAM CLI pins its own boto3.
PYTHON ?= python3
VENV := .venv
TOOLS := .venv-tools
SAM := $(TOOLS)/bin/sam
# `make lock` compiles each requirements input into a lock with hashes, with a uv of its own so that every lock is
# written by the same resolver whatever the developer has installed.
LOCKER := .venv-lock
UV_VERSION := 0.13.9
UV := $(LOCKER)/bin/uv
UV_INSTALLED := $(LOCKER)/.uv-$(UV_VERSION)
export SAM_CLI_TELEMETRY := 0

# Operator commands act on the stack of one samconfig.toml environment (ENV=prod for [prod]), in its region, whatever
# the shell's AWS profile says; STACK= and REGION= override them. Read only when an operator target runs.
ENV ?= default
STACK ?= $(shell $(PYTHON) -m devstack.samconfig $(ENV) stack_name)
REGION ?= $(shell $(PYTHON) -m devstack.samconfig $(ENV) region)
AWS_AT = --stack $(STACK) --region $(REGION)
# Operator targets depend on this: a stack or region that cannot be found stops the command before AWS is called.
aws-target:
	@test -n "$(STACK)" -a -n "$(REGION)" || { echo "No stack name or region for ENV=$(ENV) in samconfig.toml: \
	give ENV= one of its environments, or STACK= and REGION=." >&2; exit 2; }
SINCE ?= 1 hour ago

.PHONY: help venv tools lock test lint format validate build local demo bench cost clean deploy outputs logs why redrive mutation messages \
	close-all migrate-secrets test-alarm delete aws-target

help:
	@echo "make local     run the whole stack on 127.0.0.1 (no AWS account, no Docker)"
	@echo "make demo      one deal's story on the local stack: meeting booked and moved, held, recorded, deal won"
	@echo "make test      unit and integration tests (what CI runs)"
	@echo "make lint      ruff check, ruff format --check, mypy --strict over layers/ and functions/"
	@echo "make lock      recompile the locks after a requirements change (UPGRADE=1, or UPGRADE='boto3 moto': newest)"
	@echo "make messages  extract the sentences into the catalogue, merge each language, compile (README: Languages)"
	@echo "make mutation  mutation score of the core modules (slow; not in CI; docs/testing.md)"
	@echo "make bench     every benchmark; figures into bench/RESULTS.md"
	@echo "make cost      AWS calls per room on the local stack, priced at eu-west-1 list prices (in bench/RESULTS.md)"
	@echo "make validate  sam validate --lint"
	@echo "make build     sam build (arm64, python3.13, no Docker needed)"
	@echo "make deploy    sam deploy (ENV=prod for the prod environment of samconfig.toml; GUIDED=1 the first time)"
	@echo "Operator commands (ENV=, or STACK= and REGION=; default: samconfig.toml's [default]):"
	@echo "make outputs   the deployed stack's URLs, secrets and queues"
	@echo "make logs      the deployed functions' logs, from SINCE (default '1 hour ago') on, then live"
	@echo "make why       each job in the dead-letter queue and why it failed"
	@echo "make redrive   move dead-lettered jobs back to the job queue"
	@echo "make test-alarm  set one alarm to ALARM, to see the page arrive"
	@echo "make close-all delete every room of the stack at Whereby"
	@echo "make delete    stop intake, empty the queues, delete every room, then sam delete"
	@echo "make migrate-secrets  move the first version's single secret into the per-peer secrets (TEAM=<id>)"

venv: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	touch $@

tools: $(TOOLS)/.installed
$(TOOLS)/.installed: .ci/tools-requirements.lock
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r .ci/tools-requirements.lock
	touch $@

# The layer is locked for the Lambda runtime (arm64, CPython 3.13) and compiled first: the dev lock takes its
# versions as constraints, so the tests run the Powertools and requests that a deploy ships. The dev and tools locks
# are universal from CPython 3.11 on. A lock keeps its pins while they still satisfy the input; UPGRADE moves them.
# uv must not fetch a Python of its own: the resolution needs none, and only the package registry is reachable.
COMPILE = UV_PYTHON_DOWNLOADS=never $(UV) pip compile --quiet --generate-hashes --custom-compile-command "make lock" \
	$(if $(filter 1,$(UPGRADE)),--upgrade,$(foreach package,$(UPGRADE),--upgrade-package $(package)))
lock: $(UV_INSTALLED)
	$(COMPILE) --python-platform aarch64-manylinux2014 --python-version 3.13 --only-binary :all: \
		layers/shared/requirements.txt -o layers/shared/requirements.lock
	$(COMPILE) --universal --python-version 3.11 --constraint layers/shared/requirements.lock \
		requirements-dev.txt -o requirements-dev.lock
	$(COMPILE) --universal --python-version 3.11 .ci/tools-requirements.txt -o .ci/tools-requirements.lock
$(UV_INSTALLED):
	$(PYTHON) -m venv $(LOCKER)
	$(LOCKER)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	touch $@

# In random order (pytest-randomly, named so that a venv without it fails rather than runs in file order). The run
# ends with its seed; make test ARGS=--randomly-seed=N runs the same order again (docs/testing.md).
test: venv
	$(VENV)/bin/pytest -q -p randomly $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

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

cost: venv
	$(VENV)/bin/python -m bench cost

deploy: build
	$(SAM) deploy --config-env $(ENV) $(if $(GUIDED),--guided)

outputs: venv aws-target
	$(VENV)/bin/python -m devstack.operations outputs $(AWS_AT)

logs: tools aws-target
	$(SAM) logs --stack-name $(STACK) --region $(REGION) --start-time '$(SINCE)' --tail

why: venv aws-target
	$(VENV)/bin/python -m devstack.operations why $(AWS_AT)

redrive: venv aws-target
	$(VENV)/bin/python -m devstack.operations redrive $(AWS_AT)

test-alarm: venv aws-target
	$(VENV)/bin/python -m devstack.operations test-alarm $(AWS_AT)

close-all: venv aws-target
	$(VENV)/bin/python -m devstack.operations close-all $(AWS_AT)

delete: venv tools aws-target
	$(VENV)/bin/python -m devstack.operations prepare-removal $(AWS_AT)
	$(SAM) delete --stack-name $(STACK) --region $(REGION) --no-prompts

migrate-secrets: venv aws-target
	$(VENV)/bin/python -m devstack.operations migrate-secrets $(AWS_AT) $(if $(TEAM),--team $(TEAM))

local: venv
	$(VENV)/bin/python -m devstack

demo: venv
	$(VENV)/bin/python -m devstack.demo

clean:
	rm -rf .aws-sam .mutation $(VENV) $(TOOLS) $(LOCKER) .pytest_cache .ruff_cache .mypy_cache

# Mutation score of the layer's core modules (docs/testing.md): slow, so not in CI. Resumes an interrupted run;
# ARGS=--fresh starts over, ARGS=--report prints the last run's scores again.
messages: venv
	$(VENV)/bin/python -m devstack.messages $(ARGS)

mutation: venv
	$(VENV)/bin/python -m devstack.mutation $(ARGS)
