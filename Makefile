# Two commands do all set-up: `make study` and `make test` (each creates .venv when missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= default

.PHONY: setup study test lint sync clean

setup: $(STAMP)

# Reinstall only when the declared dependencies or pins change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	$(PY) -m lib jupyter  # the pmcoa kernel; JupyterLab opens notebooks/*.py as notebooks
	@touch $@

## study: generate the embedded data if missing, run every notebook on $(PROFILE), rebuild the report
study: setup
	$(PY) -m lib run --profile $(PROFILE)
	$(PY) -m lib report --run $(PROFILE)

## test: lint, then the whole test suite
test: setup lint
	$(PY) -m pytest -q

## lint: the pre-commit checks on every file (ruff check and format, notebooks without outputs, .py/.ipynb pairs in sync)
lint: setup
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pre_commit run --all-files --show-diff-on-failure; \
	else $(PY) -m ruff check lib tests notebooks && $(PY) -m ruff format --check lib tests notebooks; fi

## sync: pair notebooks/*.py with their .ipynb after editing either side
sync: setup
	$(PY) -m jupytext --sync notebooks/[0-9][0-9]_*.py

clean:
	rm -rf outputs data/default
