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
	$(PY) examples/mnist/train_lenet.py

# graphviz's `dot` renders caffe.draw's images; without it (no root) those tests skip.
graphviz:
	@command -v dot >/dev/null || (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) \
	  || echo "graphviz could not be installed: the image-rendering tests will skip"

# caffe view's test drives a real headless Chromium (selenium + chromedriver).
chromium:
	@(command -v chromium >/dev/null && command -v chromedriver >/dev/null) || \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "chromium could not be installed: the browser test will skip"

test: install graphviz chromium
	$(PY) -m pytest -q -p no:cacheprovider

.PHONY: install graphviz chromium lenet test
