# The README's two commands: `make run` and `make test`. Everything else is a helper for them.
PY ?= .venv/bin/python
PIP ?= .venv/bin/pip

.PHONY: run test test-pipeline install lint bench bench-pipeline

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

# The pipeline's tests alone (real tansu broker + PostgreSQL, ~2-3 min on 2 cores).
test-pipeline: install
	$(PY) -m pytest -q tests/pipeline

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) -m bench.run_all

# Kafka path (tansu + PostgreSQL) and embedded path, 50k tweets each, naive baseline; JSON line last.
bench-pipeline: install
	$(PY) -m bench.bench_pipeline
