# Two commands a newcomer needs: `make demo` and `make test`. Both set themselves up.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTHON ?= python3

.PHONY: install test bench demo clean

# torch first, from the local CPU build; constraints.txt keeps any other package from moving it.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[dev,ros]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) -m robovlm.bench
	$(PY) -m robovlm_node.bench

demo: install
	$(VENV)/bin/robovlm demo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
