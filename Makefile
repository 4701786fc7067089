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

.DEFAULT_GOAL := help
.PHONY: help install run test lint migrate psql clean

help: ## List the targets
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install chatsvc with its development tools

run: $(STAMP) ## Serve on :8080 (admin :8081), with a private PostgreSQL unless DATABASE_URL is set
	$(BIN)/chatsvc devdb --root $(DEVDB) exec -- $(SHELL) -c '$(BIN)/chatsvc migrate && exec $(BIN)/chatsvc serve'

test: $(STAMP) ## Run the whole suite: unit, PostgreSQL, live server and end-to-end scripts
	$(BIN)/ruff check src tests
	$(BIN)/pytest

lint: $(STAMP) ## Check style with ruff
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

migrate: $(STAMP) ## Apply pending migrations (to DATABASE_URL, else the private PostgreSQL)
	$(BIN)/chatsvc devdb --root $(DEVDB) exec -- $(BIN)/chatsvc migrate

psql: $(STAMP) ## Open psql on DATABASE_URL, else on the private PostgreSQL
	$(BIN)/chatsvc devdb --root $(DEVDB) exec -- $(SHELL) -c 'exec psql "$$DATABASE_URL"'

clean: ## Remove .venv, the private PostgreSQL's data and caches
	-[ -x $(BIN)/chatsvc ] && $(BIN)/chatsvc devdb --root $(DEVDB) stop 2>/dev/null; true
	rm -rf $(VENV) .data .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
