# Two commands on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) .venv, install torch 2.13.0 first, then the package with its test
# and Qt extras. GUI work runs under a virtual X server when no display is available.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HEADLESS := bash scripts/headless.sh
# UTF-8 I/O whatever the locale (tqdm bars, subprocess output in tests)
export PYTHONUTF8 := 1

.PHONY: venv system-deps test demo lint benchmark clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[testing,pyqt6]"
	touch $(STAMP)

system-deps:
	@bash scripts/system_deps.sh

test: venv system-deps
	$(HEADLESS) $(PY) -m pytest -q $(PYTEST_ARGS)

demo: venv system-deps
	$(HEADLESS) $(PY) -m napari_vae_anomaly demo $(DEMO_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/mypy

benchmark: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build dist demo-output benchmark-output .pytest_cache
