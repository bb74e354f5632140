# Two commands do all set-up: `make study` and `make test` (each creates .venv when missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
PROFILE ?= default

.PHONY: setup study test lint sync clean lock gpu

setup: $(STAMP)

# Reinstall only when the lock or the declared dependencies change. On Python 3.11 (what the lock was
# compiled for) every package comes from requirements.lock, hashes checked: the same versions as the
# committed results. Elsewhere pyproject's ranges, with constraints.txt's pins; results files then
# record that the environment is not the locked one (provenance.lock).
$(STAMP): pyproject.toml constraints.txt $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
		$(PY) -m pip install --quiet --require-hashes -r $(LOCK) && \
		$(PY) -m pip install --quiet --no-deps --editable . ; \
	else \
		echo "!! $$($(PY) --version) is not the lock's Python 3.11: installing unlocked (see README)"; \
		$(PY) -m pip install --quiet --constraint constraints.txt --editable '.[dev]'; \
	fi
	$(PY) -m lib jupyter  # the pmcoa kernel; JupyterLab opens notebooks/*.py as notebooks
	@touch $@

## lock: recompile requirements.lock (pip-tools) after changing pyproject.toml or constraints.txt; commit it
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip-tools
	$(PY) -m piptools compile --quiet --generate-hashes --allow-unsafe --no-emit-index-url \
		--no-emit-find-links --extra dev --strip-extras --constraint constraints.txt \
		--output-file $(LOCK) pyproject.toml

## study: generate the embedded data if missing, run every notebook on $(PROFILE), rebuild the report
study: setup
	$(PY) -m lib run --profile $(PROFILE)
	$(PY) -m lib report --profile $(PROFILE)

## test: lint, then the whole test suite
test: setup lint
	$(PY) -m pytest -q

## gpu: on a GPU machine, every GPU path in one prepared run (results/gpu/; commit them)
gpu: setup
	$(PY) -m lib gpu-check

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
