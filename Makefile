# The two commands a new machine needs: `make demo` and `make test`.
# Every target creates .venv and installs the project into it on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test slow check docs chaos browser screenshots

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(PY) -m omnispindle demo

# The whole suite runs on $$OMNISPINDLE_TEST_DSN when set, else on the
# embedded server; with a DSN set, the smoke set also runs on the embedded
# server, so two Postgres versions are covered.
test: install
	$(PY) -m pytest
	if [ -n "$$OMNISPINDLE_TEST_DSN" ]; then OMNISPINDLE_TEST_DSN= $(PY) -m pytest -m smoke; fi

# The slower suites: every code block of the docs, whole processes started as
# users start them (workers, fleets, outages, the demo) and the benchmarks'
# scenarios; on the same server as `make test`.
slow: install
	$(PY) -m pytest -m 'slow and not chaos and not browser'

# The static checks: lint, format, types, and the import contracts between wings.
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

docs: install
	$(VENV)/bin/mkdocs build --strict

# The fault suite: restarts, outages, killed backends, every connection slot
# taken, workers killed or stopped, frozen listeners, PgBouncer, and workers on
# hosts of their own (network namespaces, as root) with one host's link cut;
# each scenario prints its figures.
chaos: install
	$(PY) -m pytest -m chaos -p no:randomly

# The dashboard in headless Chromium (the system's: apt-get install chromium);
# each page's screenshot lands in $$OMNISPINDLE_SCREENSHOTS when set.
browser: install
	$(PY) -m pytest -m browser -p no:randomly tests/dashboard

# The browser tests, saving each page's screenshot in screenshots/ and the README's picture.
screenshots: install
	OMNISPINDLE_SCREENSHOTS=screenshots OMNISPINDLE_README_PICTURE=1 $(PY) -m pytest -m browser -p no:randomly tests/dashboard
