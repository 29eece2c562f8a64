"""Optional extras: a missing one is a one-line message naming it, where the feature is used."""
import builtins
import sys
import types

import pytest

import caffe
from caffe import _optional
from caffe.errors import CaffeError


@pytest.fixture
def without(monkeypatch):
    """without(name): make `import name` (and its submodules) fail as if not installed."""
    real_import = builtins.__import__

    def hide(*names):
        for name in names:
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, loaded)

        def fake(module, *args, **kwargs):
            if module.split(".")[0] in names:
                raise ModuleNotFoundError(f"No module named '{module}'", name=module)
            return real_import(module, *args, **kwargs)
        monkeypatch.setattr(builtins, "__import__", fake)
        monkeypatch.setattr(_optional, "importlib", types.SimpleNamespace(
            import_module=lambda module: fake(module, fromlist=["x"])))
    return hide


def test_message_names_the_extra(without):
    without("plyvel")
    with pytest.raises(_optional.MissingDependency) as error:
        _optional.require("plyvel", extra="leveldb", feature="LevelDB databases")
    text = str(error.value)
    assert text == "LevelDB databases need the 'plyvel' package: pip install 'pycaffe[leveldb]'"
    assert "\n" not in text
    assert isinstance(error.value, CaffeError) and isinstance(error.value, ImportError)


def test_distribution_names():
    assert "'scikit-image'" in _optional.message("skimage", "io")


def test_a_broken_dependency_of_a_present_package_is_not_hidden(monkeypatch):
    def broken(module):
        raise ModuleNotFoundError("No module named 'pyparsing'", name="pyparsing")
    monkeypatch.setattr(_optional, "importlib", types.SimpleNamespace(import_module=broken))
    with pytest.raises(ModuleNotFoundError, match="pyparsing"):
        _optional.require("pydot", extra="draw")


def test_leveldb_without_plyvel(tmp_path, without):
    from caffe.data import db
    without("plyvel")
    with pytest.raises(_optional.MissingDependency, match=r"pycaffe\[leveldb\]"):
        db.open_db(str(tmp_path / "x"), "leveldb", "new")


def test_draw_without_pydot(without):
    caffe.draw   # noqa: B018  (loaded before pydot is hidden)
    without("pydot")
    net = caffe.proto.caffe_pb2.NetParameter(name="n")
    with pytest.raises(_optional.MissingDependency, match=r"pycaffe\[draw\]"):
        caffe.draw.get_pydot_graph(net, "LR")


def test_plot_without_matplotlib(tmp_path, without):
    from caffe.tools import plot_training_log
    without("matplotlib")
    with pytest.raises(_optional.MissingDependency, match=r"pycaffe\[plot\]"):
        plot_training_log._pyplot()


def test_onnx_export_without_onnx(without):
    from caffe.export import onnx as export_onnx
    without("onnx")
    with pytest.raises(_optional.MissingDependency, match=r"pycaffe\[onnx\]"):
        export_onnx.to_onnx(None)
