# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-floor lint bench install clean redis-server

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Prefect's SDK telemetry stays off unless you set DO_NOT_TRACK yourself (as the CLI does): its
# first-run notice would land in the demo's output.
demo: $(STAMP)
	DO_NOT_TRACK=$${DO_NOT_TRACK:-1} $(BIN)/python -m prefect_wan.demo

# The many-machines tests start a real Redis server: Debian's, installed here when missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "Installing redis-server (Debian package) for the tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq >/dev/null && $$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }; }

# The checks the house keeps: lint and format (ruff), the one-way imports (import-linter), then the
# tests, among them mypy over the package (tests/test_typing.py).
lint: $(STAMP)
	$(BIN)/ruff check prefect_wan tests bench deployments ci
	$(BIN)/ruff format --check prefect_wan tests bench deployments ci
	$(BIN)/lint-imports

test: $(STAMP) redis-server lint
	$(BIN)/python -m pytest -q

# The suite again at the oldest versions prefect-wan supports (ci/floor.txt: Prefect 3.6.17 and every
# pin's lower end), in a venv of its own. CI runs it after `make test`; it fails unless it got the floor.
FLOOR_VENV := .venv-floor
FLOOR_STAMP := $(FLOOR_VENV)/.installed

$(FLOOR_STAMP): pyproject.toml ci/floor.txt
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FLOOR_VENV)/bin/python -m pip install --quiet -e ".[test]" -c ci/floor.txt
	touch $(FLOOR_STAMP)

# mypy is held to the newest versions' type hints only (`make test`): older libraries' hints differ
# (PyAV 15's context managers, say) without the code behaving any differently.
test-floor: $(FLOOR_STAMP) redis-server
	$(FLOOR_VENV)/bin/python ci/check_floor.py ci/floor.txt
	$(FLOOR_VENV)/bin/python -m pytest -q --deselect tests/test_typing.py::test_mypy_is_clean

bench: $(STAMP)
	$(BIN)/python bench/render.py
	$(BIN)/python bench/queries.py
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/scheduler.py --flow
	$(BIN)/python bench/stitch.py
	$(BIN)/python bench/double_pay.py
	$(BIN)/python bench/archive.py
	$(BIN)/python bench/review.py
	$(BIN)/python bench/shots.py
	$(BIN)/python bench/first_submission.py

clean:
	rm -rf $(VENV) $(FLOOR_VENV) wan-archive .pytest_cache
