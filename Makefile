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
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@

install: $(VENV)/.installed

lenet: install
	$(PY) examples/train_lenet.py

# graphviz's `dot` renders caffe.draw's images; without it (no root) those tests skip.
graphviz:
	@command -v dot >/dev/null || (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) \
	  || echo "graphviz could not be installed: the image-rendering tests will skip"

test: install graphviz
	$(PY) -m pytest -q -p no:cacheprovider

# Regenerate caffe/proto/caffe_pb2.py after editing caffe.proto, with the oldest protoc
# pycaffe supports (protobuf 4.25's), so that the module runs on protobuf 4.25 through 7.x.
PROTO_VENV := .venv-proto
$(PROTO_VENV)/.installed:
	$(PYTHON) -m venv $(PROTO_VENV)
	$(PROTO_VENV)/bin/python -m pip install -q 'grpcio-tools==1.62.3'
	touch $@

proto: $(PROTO_VENV)/.installed
	$(PROTO_VENV)/bin/python caffe/proto/generate.py

# The oldest and newest of each dependency, each in a fresh venv (slow; not part of `make test`).
compat: install
	$(PY) .ci/compat.py

.PHONY: install graphviz lenet test proto compat
