# Two commands for a newcomer: `make demo` (the R1-Zero run on the embedded tiny default)
# and `make test` (the whole suite, end-to-end learning runs included). Each creates .venv
# on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU build first so that the `test` extra does not pull a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: demo test test-fast clean

$(VENV)/.base: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: $(VENV)/.base
	$(PY) experiments/train.py --config configs/r1_zero.py:tiny --workdir runs/demo

test: $(VENV)/.test
	$(PY) -m pytest -n 2 --dist loadgroup -q

test-fast: $(VENV)/.test
	$(PY) -m pytest -n 2 --dist loadgroup -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
