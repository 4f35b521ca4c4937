# finq: every entry point a user or CI needs. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
RUN_DIR ?= $(CURDIR)/.run
API_REPLICAS ?= 3
WORKER_REPLICAS ?= 3
export RUN_DIR

.PHONY: help install run stop status logs test test-unit test-integration test-e2e \
        test-compose test-swarm lint lint-js format user migrate bench-finance bench bench-batches dashboard-preview loadtest loadtest-ui \
        audit lock clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

install: ## install Debian packages and the pinned virtualenv (.venv) when missing
	@scripts/bootstrap.sh

run: install ## start the whole local stack (API_REPLICAS=3 WORKER_REPLICAS=3) and print URLs
	@$(PY) scripts/localstack.py up --api-replicas $(API_REPLICAS) --worker-replicas $(WORKER_REPLICAS)

stop: ## stop everything `make run` started
	@$(PY) scripts/localstack.py down

status: ## show every process of the local stack
	@$(PY) scripts/localstack.py status

logs: ## follow the local stack's logs
	@$(PY) scripts/localstack.py logs

# `make test` measures coverage (also in the Celery workers the fixtures start) and prints
# it per package at the end; `make test COVERAGE=0` skips both.
COVERAGE ?= 1
COV_ARGS := $(if $(filter 1,$(COVERAGE)),--cov --cov-report=)

test: install ## unit, integration and end-to-end tests against real services, with coverage
	@$(PY) -m pytest tests --ignore=tests/compose --ignore=tests/swarm -q --durations=15 $(COV_ARGS) $(PYTEST_ARGS)
	@$(if $(COV_ARGS),$(PY) scripts/coverage_summary.py)

test-unit: install ## pure tests only (engine, config)
	@$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

test-integration: install ## tests with real redis-server, databases and Celery workers
	@$(PY) -m pytest tests/integration -q $(PYTEST_ARGS)

test-e2e: install ## tests that drive a real local stack through nginx
	@$(PY) -m pytest tests/e2e -q $(PYTEST_ARGS)

test-compose: install ## build the images, run the compose stack, scale it, smoke-test it
	@scripts/test-compose.sh

test-swarm: install ## a real three-node Docker Swarm here: deploy the stack, scale, kill a node, roll, tear down
	@scripts/test-swarm.sh

# Each check runs even when an earlier one failed, so one run shows every problem.
lint: install ## ruff check, ruff format --check, mypy --strict, import contracts, Biome
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(VENV)/bin/mypy || status=1; \
	$(VENV)/bin/lint-imports --no-cache || status=1; \
	node_modules/.bin/biome check --error-on-warnings || status=1; \
	exit $$status

lint-js: install ## Biome's lint and format check of the web page (biome.json)
	@node_modules/.bin/biome check --error-on-warnings

format: install ## apply ruff's fixes, then ruff's formatting
	@status=0; \
	$(VENV)/bin/ruff check --fix . || status=1; \
	$(VENV)/bin/ruff format . || status=1; \
	exit $$status

# COMPOSE="docker compose" (or docker-compose, with -p/--env-file as needed): the account is
# made in the compose stack's database, by a one-off API container (finq-service user).
COMPOSE ?=
user: ## create a user: make user NAME=alice [ROLE=admin] [COMPOSE="docker compose"] (asks for the password)
	@test -n "$(NAME)" || { echo "usage: make user NAME=alice [ROLE=admin] [COMPOSE=\"docker compose\"]"; exit 2; }
	@if [ -n "$(COMPOSE)" ]; then \
	  tty=-T; [ -t 0 ] && tty=; \
	  $(COMPOSE) run --rm $$tty fastapi-app user "$(NAME)" --role "$(or $(ROLE),user)"; \
	else \
	  $(MAKE) --no-print-directory install && \
	  $(PY) scripts/create_user.py "$(NAME)" --role "$(or $(ROLE),user)"; \
	fi

migrate: install ## apply database migrations to DATABASE_URL
	@$(PY) -m finq_core.migrate

bench-finance: install ## time each calculation on one core
	@$(PY) scripts/bench_finance.py

bench: install ## benchmark the full stack (see docs/performance.md)
	@$(PY) scripts/bench_stack.py

bench-batches: install ## batch figures vs the bare Celery no-op ceiling and the engine run directly (docs/performance.md)
	@$(PY) scripts/bench_batches.py

dashboard-preview: install ## draw the Grafana dashboard's panels from a real Prometheus (docs/screenshots/dashboard.png)
	@$(PY) scripts/dashboard_preview.py

loadtest: install ## headless Locust against the running stack (USERS, DURATION, MIN_TASKS_PER_SEC, MIX_SCALE)
	@scripts/loadtest.sh

loadtest-ui: install ## Locust web UI on :8089 pointed at nginx
	@scripts/loadtest.sh --ui

audit: install ## pip-audit over the pinned dependencies
	@$(VENV)/bin/pip-audit -r requirements.lock --progress-spinner off

lock: install ## re-pin dependencies into requirements.lock after editing pyproject.toml
	@$(VENV)/bin/pip install -q uv && $(VENV)/bin/uv pip compile pyproject.toml --all-extras \
	  -o requirements.lock --python-version 3.11 -q

clean: stop ## remove the runtime folder (data, logs) and caches
	rm -rf $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache
