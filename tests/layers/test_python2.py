"""Python layers written for Python 2 run unchanged (caffe.layers.python2).

The fixture is a small library in py-faster-rcnn's style, written out by the test (Python 2
files cannot sit in the tree: every tool that compiles the tree would stop at them): a package
on sys.path whose layer module uses print statements, an implicit relative import, classic
division, xrange, iteritems, has_key, `raise E, msg`, np.float, a float slice bound and
one-argument yaml.load of its param_str_.
"""
import os
import sys
import textwrap

import numpy as np
import pytest

import caffe
from caffe.layers import python2

pytest.importorskip("fissix", reason="Python 2 layers need the py2 extra")
pytest.importorskip("yaml", reason="the layer reads its param_str with PyYAML")

LAYER = '''\
import caffe
import numpy as np
import yaml
from helpers import half, doubled
from config import cfg


class Py2Layer(caffe.Layer):
    """Keeps the first half of the channels (rounded down), times k, plus one in column cfg."""

    def setup(self, bottom, top):
        params = yaml.load(self.param_str_)
        if not params.has_key('k'):
            raise ValueError, 'param_str needs k'
        self._k = doubled(params)['k']
        print 'Py2Layer: k =', self._k, 'phase', self.phase

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
        top[1].reshape(1)

    def forward(self, bottom, top):
        n = bottom[0].data.shape[1]
        keep = half(n)
        out = np.zeros(bottom[0].data.shape, dtype=np.float)
        for i in xrange(keep):
            out[:, i] = bottom[0].data[:, i] * self._k
        start = 1.0 * cfg['column']
        out[:, start:start + 1] += 1
        top[0].data[...] = out
        top[1].data[...] = keep

    def backward(self, top, propagate_down, bottom):
        grad = np.zeros(bottom[0].diff.shape)
        grad[:, :half(grad.shape[1])] = self._k
        grad /= 1
        bottom[0].diff[...] = grad * top[0].diff
'''

HELPERS = '''\
def half(n):
    return n / 2


def doubled(params):
    return dict((key, 2 * value) for key, value in params.iteritems())
'''

# Valid Python 3, but Python 2 code all the same: 3 / 2 is 1 there.
CONFIG = "cfg = {'column': 3 / 2 + 3}\n"

NET = '''\
name: "py2"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 5 dim: 3 } } }
layer { name: "py" type: "Python" bottom: "data" top: "out" top: "kept"
        python_param { module: "py2lib.layer" layer: "Py2Layer" param_str: "%s" } }
'''


@pytest.fixture(autouse=True)
def no_marked_folders(monkeypatch):
    """Each test starts with no folder marked as Python 2 (an earlier test in the process, such
    as the tutorial's, may have marked its own)."""
    monkeypatch.setattr(python2, "_roots", [])


@pytest.fixture
def lib(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    package = root / "py2lib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "layer.py").write_text(LAYER)
    (package / "helpers.py").write_text(HELPERS)
    (package / "config.py").write_text(CONFIG)
    monkeypatch.syspath_prepend(str(root))
    python2.set_python2_layers("auto")
    yield root
    python2.set_python2_layers("auto")
    python2.unmark_root(str(root))
    for name in [m for m in sys.modules if m == "py2lib" or m.startswith("py2lib.")]:
        del sys.modules[name]


def make_net(tmp_path, param_str="{'k': 1.5}"):
    path = tmp_path / "net.prototxt"
    path.write_text(NET % param_str)
    return caffe.Net(str(path), caffe.TEST)


def test_a_python2_layer_runs_with_python2_semantics(lib, tmp_path, capsys, caplog):
    net = make_net(tmp_path)
    assert "is not Python 3; translating" in caplog.text and str(lib) in caplog.text
    assert "Py2Layer: k = 3.0 phase TEST" in capsys.readouterr().out
    x = np.arange(30, dtype=np.float32).reshape(2, 5, 3)
    out = net.forward(data=x)
    expected = np.zeros_like(x)
    expected[:, :2] = x[:, :2] * 3.0           # 5 / 2 == 2: classic division floors
    expected[:, 4:5] += 1                      # column 3 / 2 + 3 == 4, a float bound 4.0
    np.testing.assert_array_equal(out["out"], expected)
    assert out["kept"][0] == 2
    net.blobs["out"].diff[...] = 1
    net.backward()
    grad = np.zeros_like(x)
    grad[:, :2] = 3.0
    np.testing.assert_array_equal(net.blobs["data"].diff, grad)
    assert python2.python2_roots() == [str(lib)]
    # Nothing was written beside the user's files.
    assert not (lib / "py2lib" / "__pycache__").exists() or \
        not any("layer" in f for f in os.listdir(lib / "py2lib" / "__pycache__"))


def test_param_str_is_read_as_data(lib, tmp_path):
    """yaml.load(param_str) becomes safe_load: a model file cannot construct Python objects."""
    with pytest.raises(Exception, match="could not determine a constructor"):
        make_net(tmp_path, param_str="!!python/object/apply:os.system [echo owned]")


def test_translation_can_be_switched_off(lib, tmp_path):
    python2.set_python2_layers(False)
    with pytest.raises(SyntaxError) as error:
        make_net(tmp_path)
    assert error.value.filename == str(lib / "py2lib" / "layer.py")
    assert python2.python2_roots() == []


def test_python2_code_that_compiles_as_python3_is_translated_when_asked(lib, tmp_path):
    """True: every Python-layer module's folder is Python 2, even when it compiles as Python 3."""
    (lib / "py2lib" / "layer.py").write_text(
        LAYER.replace("print 'Py2Layer: k =', self._k, 'phase', self.phase", "pass"))
    caffe.set_python2_layers(True)
    net = make_net(tmp_path)
    assert net.forward(data=np.ones((2, 5, 3), np.float32))["kept"][0] == 2


def test_neither_python3_nor_python2_reports_the_python3_error(lib, tmp_path):
    (lib / "py2lib" / "layer.py").write_text("def broken(:\n    pass\n")
    with pytest.raises(SyntaxError) as error:
        make_net(tmp_path)
    assert error.value.lineno == 1 and "not Python 2 either" in "".join(error.value.__notes__)
    assert python2.python2_roots() == []


def test_python3_layers_are_left_alone(tmp_path, monkeypatch):
    (tmp_path / "py3layer.py").write_text(textwrap.dedent("""\
        import caffe
        class Half(caffe.Layer):
            def setup(self, bottom, top): pass
            def reshape(self, bottom, top): top[0].reshape(*bottom[0].data.shape)
            def forward(self, bottom, top): top[0].data[...] = 3 / 2
            def backward(self, top, propagate_down, bottom): pass
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    net_text = NET.replace('top: "kept"', "").replace("py2lib.layer", "py3layer") \
        .replace("Py2Layer", "Half") % ""
    (tmp_path / "net.prototxt").write_text(net_text)
    try:
        out = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST).forward()["out"]
    finally:
        sys.modules.pop("py3layer", None)
    assert (out == 1.5).all() and python2.python2_roots() == []


@pytest.mark.parametrize("a, b, expected", [
    (7, 2, 3), (-7, 2, -4), (7.0, 2, 3.5), (7, 2.0, 3.5), (np.int64(7), 2, 3),
    (np.float32(7), 2, 3.5)])
def test_classic_division(a, b, expected):
    assert python2.classic_div(a, b) == expected


def test_classic_division_of_arrays():
    ints = np.array([7, -7])
    np.testing.assert_array_equal(python2.classic_div(ints, 2), [3, -4])
    floats = np.array([7.0, -7.0])
    same = python2.classic_idiv(floats, 2)
    assert same is floats and (floats == [3.5, -3.5]).all()     # in place, as /= was


def test_translate_shows_what_changed():
    text = python2.translate(textwrap.dedent("""\
        from __future__ import division
        x = 7 / 2
        """))
    assert "x = 7 / 2" in text              # true division asked for: left alone
    text = python2.translate("y = np.float(a[i:j]) / 2.0\nz = yaml.load(s, Loader=L)\n")
    assert "y = float(a[__caffe_index__(i):__caffe_index__(j)]) / 2.0" in text
    assert "yaml.load(s, Loader=L)" in text


def test_missing_fissix_names_the_extra(monkeypatch):
    from caffe import _optional
    monkeypatch.setattr(python2, "_tool", [])

    def refuse(module, extra, feature=None):
        raise _optional.MissingDependency(_optional.message(module, extra, feature))
    monkeypatch.setattr(python2, "require", refuse)
    with pytest.raises(_optional.MissingDependency, match=r"pycaffe\[py2\]"):
        python2.translate("print 'x'\n")
