# A new user needs two targets: `make run` and `make test`. Each sets itself up from a fresh clone
# (virtualenv in .venv, the package with its dev extras), so neither needs a step before it.

VENV        := .venv
PY          := $(VENV)/bin/python
# Re-install only when pyproject.toml is newer than this stamp.
STAMP       := $(VENV)/.installed-from-pyproject
HOST        ?= 127.0.0.1
PORT        ?= 8000
PYTEST_ARGS ?=
# `make test` runs the suite in pytest-xdist workers, one per core, at most 4 (docs/testing.md has what
# each worker keeps to itself). PYTEST_WORKERS=0 runs it serially in one process (pdb, print debugging).
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); if [ "$$n" -gt 4 ]; then n=4; elif [ "$$n" -lt 2 ]; then n=0; fi; echo $$n)
BENCH_ARGS  ?=

# Local commands run in debug mode unless told otherwise, so no secret key is needed on a laptop.
# Only these targets get it: `make test` leaves DJANGO_DEBUG to pytest's own settings.
LOCAL_ENV   := DJANGO_DEBUG=$${DJANGO_DEBUG:-true}

.DEFAULT_GOAL := help
.PHONY: help run test venv install migrate lint bench clean

help:
	@echo "make run      set up, migrate, load the demo data and start web + worker + beat on http://$(HOST):$(PORT)/"
	@echo "make test     set up and run the whole test suite in parallel (PYTEST_ARGS='-k name -x' to narrow it,"
	@echo "              PYTEST_WORKERS=0 to run it serially)"
	@echo "make install  create .venv and install the package with its dev extras"
	@echo "make migrate  apply database migrations"
	@echo "make lint     ruff check, then mypy (with the django and DRF stubs) over the package"
	@echo "make bench    run the benchmarks in bench/ (BENCH_ARGS=--quick for a short run)"
	@echo "make clean    remove caches, build files, collected static files and the local broker queue"

run: install .env
	$(LOCAL_ENV) $(PY) manage.py migrate --noinput
	$(LOCAL_ENV) $(PY) manage.py seed_demo
	exec env $(LOCAL_ENV) HOST=$(HOST) PORT=$(PORT) $(PY) manage.py serve

# pytest exits 5 when it collected no test; that must fail like any other non-zero exit.
# --dist loadgroup: each group of GROUPS in tests/workers.py (the browser tests, the fresh-clone newcomer
# tests) runs whole on one worker; every other test goes to whichever worker is free.
test: install
	@$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: failing." >&2; fi; \
	exit $$rc

venv: $(PY)

install: $(STAMP)

$(PY):
	@py=$$(command -v python3.11 || command -v python3 || true); \
	if [ -z "$$py" ]; then echo "make: need python3.11 (or a python3 >= 3.11) on PATH" >&2; exit 1; fi; \
	if ! "$$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		echo "make: $$py is Python $$("$$py" -c 'import platform; print(platform.python_version())'); need >= 3.11" >&2; \
		exit 1; \
	fi; \
	echo "Creating $(VENV) with $$py"; \
	"$$py" -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@echo "Installing the package and its dev extras into $(VENV) (the first time takes a minute) ..."
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# Written once, git-ignored: debug mode and a generated secret key for this checkout, so every `manage.py`
# command the docs show works as written after `make run`. Real environment variables win over it.
.env: | $(PY)
	@$(PY) -c 'import secrets; print("# Local settings for this checkout, written once by make run (git-ignored).\n# Real environment variables win. Delete this file to get a new secret key.\nDJANGO_DEBUG=true\nDJANGO_SECRET_KEY=" + secrets.token_urlsafe(50))' > $@
	@echo "Wrote .env: DJANGO_DEBUG=true and a generated DJANGO_SECRET_KEY, for local manage.py commands."

migrate: install .env
	$(LOCAL_ENV) $(PY) manage.py migrate --noinput

# mypy's django plugin imports the settings, which need a secret key unless debug mode is on.
lint: install
	$(VENV)/bin/ruff check .
	DJANGO_DEBUG=true $(VENV)/bin/mypy

# Benchmarks stay out of the test suite; each bench/*.py prints its figures beside a ceiling.
bench: install
	@set -e; found=0; \
	for f in bench/*.py; do \
		[ -e "$$f" ] || continue; \
		case "$$(basename $$f)" in _*) continue;; esac; \
		found=1; echo "== $$f"; $(LOCAL_ENV) $(PY) "$$f" $(BENCH_ARGS); \
	done; \
	if [ $$found -eq 0 ]; then echo "make bench: no benchmarks in bench/ yet" >&2; fi

# Keeps .venv and the database (var/finops.sqlite3); `rm -rf .venv var` resets everything.
clean:
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache .mypy_cache build dist *.egg-info
	rm -rf var/staticfiles var/celery var/celerybeat-schedule*
