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

# iproute2's `ip` makes the two network namespaces of tests/parallel/test_two_hosts.py.
iproute2:
	@command -v ip >/dev/null || (apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null) \
	  || echo "iproute2 could not be installed: the two-host tests will skip"

# Java runs Spark for tests/test_spark.py (caffe.spark in local mode).
java:
	@command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null) \
	  || echo "Java could not be installed: the Spark tests will skip"

# GNU Octave and mkoctfile run matcaffe's tests (tests/matlab: the gateway is built there).
octave:
	@(command -v octave-cli >/dev/null && command -v mkoctfile >/dev/null) || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq octave liboctave-dev >/dev/null) \
	  || echo "Octave could not be installed: the matcaffe tests will skip"

# matcaffe's gateway for Octave, in ~/.cache/pycaffe/matlab (python -m caffe.matlab path).
matcaffe: install octave
	$(PY) -m caffe.matlab build

test: install graphviz chromium iproute2 java octave
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

.PHONY: install graphviz chromium iproute2 java octave matcaffe lenet test proto compat
