# The README's two commands: `make run` and `make test`. Everything else is a helper for them.
PY ?= .venv/bin/python
PIP ?= .venv/bin/pip

.PHONY: run test install lint bench

.venv/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	touch $@

install: .venv/.installed

run: install
	$(PY) -m pipeline run --source mock

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) -m bench.run_all
