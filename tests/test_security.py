"""Untrusted models: loading a prototxt or weights never runs code from them.

Prototxt is parsed by protobuf's text parser and weights by its binary parser or h5py; no
reader unpickles, evals or imports anything named by a file. The one exception is the Python
layer, which imports the module its python_param names: caffe.set_python_layers_allowed(False)
(or `caffe ... -allow_python_layers=false`) refuses such models before anything is imported.
"""
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe
from caffe import formats
from caffe.errors import CaffeError, LayerSetupError
from caffe.layers import python_layer
from caffe.tools import caffe as caffe_tool

PACKAGE = Path(caffe.__file__).parent

MODULE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
import caffe

class Evil(caffe.Layer):
    def setup(self, bottom, top):
        pass
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data
    def backward(self, top, propagate_down, bottom):
        pass
"""

NET = """
name: "untrusted"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "py" type: "Python" bottom: "x" top: "y"
        python_param { module: "%s" layer: "Evil" } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "x" top: "loss" }
"""


@pytest.fixture
def untrusted(tmp_path, request):
    """A prototxt whose Python layer module (beside it) leaves a marker file when imported."""
    name = f"evil_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    marker = tmp_path / "imported.txt"
    (tmp_path / f"{name}.py").write_text(MODULE.format(marker=str(marker)))
    (tmp_path / "net.prototxt").write_text(NET % name)
    yield tmp_path, marker
    sys.modules.pop(name, None)
    python_layer.set_python_layers_allowed(True)


def test_disabled_python_layers_import_nothing(untrusted):
    folder, marker = untrusted
    caffe.set_python_layers_allowed(False)
    with pytest.raises(LayerSetupError, match=r"layer 'py' \(Python\): Python layers are "
                                              r"disabled .* would run code from module 'evil_"):
        caffe.Net(str(folder / "net.prototxt"), caffe.TEST)
    assert not marker.exists()


def test_enabled_python_layers_do_run_the_models_code(untrusted):
    """Why the switch exists: by default (as in pycaffe) the module beside the prototxt runs."""
    folder, marker = untrusted
    caffe.Net(str(folder / "net.prototxt"), caffe.TEST)
    assert marker.read_text() == "imported"


@pytest.mark.parametrize("command", ["train", "test", "time"])
def test_cli_flag_disables_python_layers(untrusted, capsys, monkeypatch, command):
    folder, marker = untrusted
    monkeypatch.chdir(folder)
    (folder / "solver.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 max_iter: 2 '
                                            'lr_policy: "fixed" snapshot_after_train: false\n')
    (folder / "w.caffemodel").write_bytes(b"")
    argv = {"train": ["-solver", "solver.prototxt"],
            "test": ["-model", "net.prototxt", "-weights", "w.caffemodel", "-iterations", "1"],
            "time": ["-model", "net.prototxt", "-iterations", "1"]}[command]
    code = caffe_tool.main([command, *argv, "-allow_python_layers=false"])
    assert code == 1
    assert "Python layers are disabled" in capsys.readouterr().err
    assert not marker.exists()
    assert python_layer.python_layers_allowed()     # the flag lasts for the command only


def _payload(marker):
    class Payload:
        def __reduce__(self):
            return Path.write_text, (Path(marker), "unpickled")
    return pickle.dumps(Payload())


@pytest.mark.parametrize("suffix", [".caffemodel", ".caffemodel.h5", ".binaryproto",
                                    ".prototxt", ".solverstate"])
def test_pickles_are_never_unpickled(tmp_path, suffix):
    marker = tmp_path / "unpickled.txt"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(_payload(marker))
    net = caffe.Net(formats.parse_text(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }',
        caffe.proto.caffe_pb2.NetParameter()), caffe.TEST)
    readers = {".caffemodel": lambda: net.copy_from(str(path)),
               ".caffemodel.h5": lambda: net.copy_from(str(path)),
               ".binaryproto": lambda: formats.read_binaryproto(str(path)),
               ".prototxt": lambda: caffe.Net(str(path), caffe.TEST),
               ".solverstate": lambda: formats.read_binary_proto(
                   str(path), caffe.proto.caffe_pb2.SolverState())}
    try:
        readers[suffix]()
    except CaffeError:
        pass
    assert not marker.exists()


def test_hdf5_object_datasets_are_refused(tmp_path):
    import h5py
    path = tmp_path / "w.caffemodel.h5"
    with h5py.File(path, "w") as f:
        f.create_group("data/ip").create_dataset("0", data=np.array([b"x", b"y"], dtype=object),
                                                 dtype=h5py.string_dtype())
    with pytest.raises(CaffeError, match="not numbers"):
        formats.read_hdf5_weights(str(path))


# Calls that would turn file contents into code. The Python layer's import is the documented
# exception (python_layer.py, behind set_python_layers_allowed); parallel/launch.py starts its own
# workers with a fixed command line.
FORBIDDEN = [r"\bpickle\b", r"\btorch\.load\(", r"allow_pickle\s*=\s*True", r"(?<![.\w])eval\(",
             r"(?<![.\w])exec\(", r"\byaml\.(unsafe_)?load\(", r"\bos\.system\(",
             r"shell\s*=\s*True", r"__import__\(", r"\bmarshal\b", r"\bshelve\b"]


def test_no_reader_can_run_code():
    hits = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "caffe_pb2.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern in FORBIDDEN:
                if re.search(pattern, code):
                    hits.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)
