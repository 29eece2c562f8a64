# Two entry points for a fresh machine (see README): `make lenet` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned for development and CI (a CPU build lies on the project's machines);
# the package itself accepts a range.
TORCH_PIN := torch==2.13.0

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

lenet: install
	$(PY) examples/train_lenet.py

test: install
	$(PY) -m pytest -q -p no:cacheprovider

.PHONY: install lenet test
