# chatsvc: `make run` serves on a fresh machine, `make test` proves it. `make help` lists the rest.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The private PostgreSQL of `make run` and `make psql` (ignored when DATABASE_URL is set).
DEVDB := .data/dev
export CHATSVC_PORT ?= 8080
export CHATSVC_ADMIN_PORT ?= 8081
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= chatsvc:$(VERSION)
# The Containerfile's base: empty for its default (python:3.11-slim-bookworm from docker.io), or the
# image `make base-image` makes from Debian's packages where no registry is reachable.
BASE_IMAGE ?=
LOCAL_BASE_IMAGE := localhost/chatsvc-base:bookworm
# podman's settings for these hosts (runc, cgroupfs, host network), not the machine's own.
export CONTAINERS_CONF ?= $(CURDIR)/deploy/podman/containers.conf
FANOUT_ARGS ?= --streams 100 --messages 2000 --concurrency 1,8
# Everything ruff checks: the package (the benchmark included), the tests and the Python scripts in bin/.
LINTED := src tests bin/update-readme bin/build-image bin/prometheus-rule

.DEFAULT_GOAL := help
.PHONY: help install run test import-original test-rollout fuzz lint readme screenshot prometheus-rule image base-image migrate psql clean bench bench-scale bench-send bench-import bench-smoke

help: ## List the targets
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv with chatsvc and its development tools; check the system packages (bin/system-deps)
	bin/system-deps

run: $(STAMP) ## Serve on :8080 (admin :8081, with /debug/*), with a private PostgreSQL unless DATABASE_URL is set
	CHATSVC_DEBUG_ENDPOINTS=$${CHATSVC_DEBUG_ENDPOINTS:-true} $(BIN)/chatsvc devdb --root $(DEVDB) exec -- $(SHELL) -c '$(BIN)/chatsvc migrate && exec $(BIN)/chatsvc serve'

test: $(STAMP) ## Run the whole suite: unit, PostgreSQL, live server and end-to-end scripts
	bin/system-deps
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy
	$(BIN)/pytest

test-rollout: $(STAMP) ## Replace 2 replicas behind HAProxy twice under load; expect 0 failed requests
	bin/system-deps
	$(BIN)/pytest tests/live/test_rollout.py

.PHONY: test-failover
test-failover: $(STAMP) ## Kill the primary of an HA PostgreSQL (Patroni) under load, then switch over; print the figures
	$(BIN)/pytest tests/live/test_failover.py

fuzz: $(STAMP) ## Fuzz the API with Schemathesis: many more cases than make test (several minutes)
	CHATSVC_FUZZ_EXAMPLES=$${CHATSVC_FUZZ_EXAMPLES:-2000} $(BIN)/pytest tests/live/test_fuzz.py

# uvicorn, the comparison server of `make bench`, on top of the development install.
$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed ## Load-test the routes vs pgbench and uvicorn, stream fan-out, what a send costs PostgreSQL and the import (about 25 min); writes BENCHMARKS.md
	$(BIN)/python -m chatsvc.bench $(FANOUT_ARGS)
	$(BIN)/python -m chatsvc.bench --send-only
	$(BIN)/python -m chatsvc.bench --import-only

bench-import: $(VENV)/.bench-installed ## chatsvc import-original on an original's database of a million messages (a few minutes)
	$(BIN)/python -m chatsvc.bench --import-only

bench-send: $(VENV)/.bench-installed ## What a send costs PostgreSQL, part by part: pgbench on SEND_MESSAGE without each part (a few minutes)
	$(BIN)/python -m chatsvc.bench --send-only

bench-scale: $(VENV)/.bench-installed ## GET /messages and the conversation routes with 10 thousand vs 10 million messages (about 20 min)
	$(BIN)/python -m chatsvc.bench --scale

bench-smoke: $(VENV)/.bench-installed ## Every part of make bench, short and small (1-2 min); writes .data/bench/smoke.md
	$(BIN)/python -m chatsvc.bench --smoke

lint: $(STAMP) ## Check style with ruff and types with mypy (strict on src/, see pyproject.toml)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy

readme: $(STAMP) ## Regenerate README.md's routes, settings and targets from the code
	$(BIN)/python bin/update-readme

prometheus-rule: $(STAMP) ## Write deploy/prometheus's PrometheusRule from the rule file (chatsvc-rules.yaml)
	$(BIN)/python bin/prometheus-rule

screenshot: $(STAMP) ## Retake docs/web-client.png, the README's picture of the web client, in a browser test
	CHATSVC_UPDATE_SCREENSHOT=1 $(BIN)/pytest tests/live/test_browser_chat.py -k accessibility_violation

image: ## Build the container image with podman (IMAGE=chatsvc:VERSION, BASE_IMAGE=the Python base)
	bin/build-image --tag $(IMAGE) $(if $(BASE_IMAGE),--base $(BASE_IMAGE))

base-image: ## Make the local base image from Debian's packages (debootstrap, as root; kept by podman)
	bin/base-image $(LOCAL_BASE_IMAGE)

import-original: $(STAMP) ## Import an abatilo/chat database: make import-original FROM=postgresql://… [ARGS=--dry-run]
	@test -n "$(FROM)" || { echo "make import-original: set FROM to the original's database URL" >&2; exit 2; }
	$(BIN)/chatsvc devdb --root $(DEVDB) exec -- $(BIN)/chatsvc import-original --from '$(FROM)' $(ARGS)

migrate: $(STAMP) ## Apply pending migrations (to DATABASE_URL, else the private PostgreSQL)
	$(BIN)/chatsvc devdb --root $(DEVDB) exec -- $(BIN)/chatsvc migrate

psql: $(STAMP) ## Open psql on DATABASE_URL, else on the private PostgreSQL
	$(BIN)/chatsvc devdb --root $(DEVDB) exec -- $(SHELL) -c 'exec psql "$$DATABASE_URL"'

clean: ## Remove .venv, the private PostgreSQL's data and caches
	-for root in $(DEVDB) .data/test .data/bench; do \
	  [ -x $(BIN)/chatsvc ] && $(BIN)/chatsvc devdb --root $$root remove 2>/dev/null; done; true
	-[ -x $(BIN)/python ] && $(BIN)/python -m chatsvc.ha remove .data/failover/cluster \
	  .data/failover/pgbouncer .data/bench/pgbouncer; true
	rm -rf $(VENV) .data .artifacts .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
