# Two commands: `make demo` and `make test`. Both create or refresh .venv first (quick when current).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.advtune-installed

.PHONY: setup demo test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) scripts/flux_demo.py

test: setup
	$(PY) -m pytest -q

test-slow: setup  # multi-process DDP/FSDP, SIGKILL crash safety (exit code 5 = none selected)
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

bench: setup
	$(PY) benchmarks/bench_step.py

clean:
	rm -rf $(VENV) outputs .demo_cache
