"""The Python layer: pycaffe's contract for user layers written on NumPy arrays."""
import textwrap

import numpy as np
import pytest
import torch

import caffe
from caffe.errors import LayerSetupError
from caffe.layers import python_layer
from caffe.testing import check_gradient, make_layer, random_blob

MODULE = "tests.layers.pylayers.simple"


def python_param(cls, param_str=None, module=MODULE):
    extra = f" param_str: {param_str!r}" if param_str is not None else ""
    return f'type: "Python" python_param {{ module: "{module}" layer: "{cls}"{extra} }}'


def net_text(cls, param_str=None, shape=(2, 3, 4), module=MODULE):
    dims = " ".join(f"dim: {d}" for d in shape)
    return textwrap.dedent(f"""\
        name: "pynet"
        force_backward: true
        layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}
        layer {{ name: "py" bottom: "data" top: "out" {python_param(cls, param_str, module)} }}
        """)


def write_net(tmp_path, *args, **kwargs):
    path = tmp_path / "net.prototxt"
    path.write_text(net_text(*args, **kwargs))
    return str(path)


def test_forward_backward_numpy(tmp_path):
    net = caffe.Net(write_net(tmp_path, "TimesTen"), caffe.TRAIN)
    x = np.random.RandomState(0).randn(2, 3, 4).astype(np.float32)
    out = net.forward(data=x)["out"]
    np.testing.assert_allclose(out, 10 * x, rtol=1e-6)
    diffs = net.backward(out=np.ones_like(out))
    np.testing.assert_allclose(diffs["data"], 10 * np.ones_like(x))
    assert net.layers[1].type == "Python"


def test_param_str_and_gradient():
    layer = make_layer(python_param("Power", "3"))
    bottom = [random_blob((2, 3), low=0.5, high=1.5)]
    check_gradient(layer, bottom)
    assert layer.impl.p == 3
    assert layer.impl.param_str == "3"


def test_no_param_str_is_empty():
    layer = make_layer(python_param("TimesTen"))
    assert layer.impl.param_str == ""


def test_phase_is_visible():
    for phase in (caffe.TRAIN, caffe.TEST):
        layer = make_layer('name: "p" top: "t" ' + python_param("PhaseReporter"), phase=phase)
        assert layer.impl.phase == phase


def test_learned_blob_gradient(device):
    layer = make_layer(python_param("ChannelScale"), device=device)
    check_gradient(layer, [random_blob((2, 3, 2), device=device)])
    assert len(layer.blobs) == 2 and layer.blobs[0].dtype == torch.float64
    assert len(layer.impl.blobs) == 2
    assert isinstance(layer.impl.blobs[0].data, np.ndarray)


def test_learned_blob_saved_and_loaded(tmp_path):
    proto = write_net(tmp_path, "ChannelScale")
    net = caffe.Net(proto, caffe.TRAIN)
    assert [b.data.shape for b in net.params["py"]] == [(3,), (3,)]
    np.testing.assert_array_equal(net.params["py"][0].data, [1, 2, 3])
    net.params["py"][0].data[...] = [7, 8, 9]
    x = np.ones((2, 3, 4), np.float32)
    net.forward(data=x)
    net.backward(out=np.ones((2, 3, 4), np.float32))
    np.testing.assert_allclose(net.params["py"][1].diff, [8, 8, 8])
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    loaded = caffe.Net(proto, weights, caffe.TEST)
    np.testing.assert_array_equal(loaded.params["py"][0].data, [7, 8, 9])
    out = loaded.forward(data=x)["out"]
    np.testing.assert_allclose(out[0, :, 0], [7.5, 8.5, 9.5])


def test_user_exception_names_the_layer(tmp_path):
    net = caffe.Net(write_net(tmp_path, "Broken"), caffe.TEST)
    with pytest.raises(ValueError, match="broken on purpose") as info:
        net.forward()
    assert any("'py'" in note and "Broken" in note for note in info.value.__notes__)


def test_disallowed():
    python_layer.set_python_layers_allowed(False)
    try:
        with pytest.raises(LayerSetupError, match="Python layers are disabled"):
            make_layer(python_param("TimesTen"))
    finally:
        python_layer.set_python_layers_allowed(True)
    make_layer(python_param("TimesTen"))


def test_unimportable_module():
    with pytest.raises(LayerSetupError, match="cannot import module 'no_such_module_xyz'"):
        make_layer(python_param("X", module="no_such_module_xyz"))


@pytest.mark.parametrize("cls", ["Missing", "NotALayer"])
def test_bad_class(cls):
    with pytest.raises(LayerSetupError, match=cls):
        make_layer(python_param(cls))


MODULE_BESIDE = '''
import caffe

class AddOne(caffe.Layer):
    def setup(self, bottom, top):
        self.k = float(self.param_str or 1)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data + self.k
'''


def _module_beside_prototxt(tmp_path, name):
    (tmp_path / f"{name}.py").write_text(MODULE_BESIDE)
    return write_net(tmp_path, "AddOne", "2", module=name)


def test_module_in_current_directory(tmp_path, monkeypatch):
    proto = _module_beside_prototxt(tmp_path, "pylayer_cwd_mod")
    monkeypatch.chdir(tmp_path)
    net = caffe.Net(proto, caffe.TEST)
    np.testing.assert_allclose(net.forward(data=np.zeros((2, 3, 4)))["out"], 2)


def test_module_beside_the_prototxt(tmp_path, monkeypatch):
    proto = _module_beside_prototxt(tmp_path, "pylayer_beside_mod")
    monkeypatch.chdir(tmp_path.parent)
    with python_layer.module_search_dir(tmp_path):
        net = caffe.Net(proto, caffe.TEST)
    np.testing.assert_allclose(net.forward(data=np.zeros((2, 3, 4)))["out"], 2)


def test_net_searches_the_prototxt_folder(tmp_path, monkeypatch):
    proto = _module_beside_prototxt(tmp_path, "pylayer_net_dir_mod")
    monkeypatch.chdir(tmp_path.parent)
    net = caffe.Net(proto, caffe.TEST)
    np.testing.assert_allclose(net.forward(data=np.zeros((2, 3, 4)))["out"], 2)


def test_fork_python_layer_attributes(tmp_path, monkeypatch):
    """py-faster-rcnn's layers read self.param_str_ (caffe-fast-rcnn's name) and index their
    config by str(self.phase)."""
    (tmp_path / "forklayer.py").write_text(
        "import caffe\n"
        "class L(caffe.Layer):\n"
        "    def setup(self, bottom, top):\n"
        "        assert self.param_str_ == self.param_str == 'feat_stride: 16'\n"
        "        assert str(self.phase) == 'TEST' and self.phase == caffe.TEST\n"
        "    def reshape(self, bottom, top):\n"
        "        top[0].reshape(1)\n"
        "    def forward(self, bottom, top):\n"
        "        top[0].data[...] = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    net_file = tmp_path / "net.prototxt"
    net_file.write_text('layer { name: "p" type: "Python" top: "y" python_param { '
                        'module: "forklayer" layer: "L" param_str: "feat_stride: 16" } }')
    import caffe
    net = caffe.Net(str(net_file), caffe.TEST)
    assert net.forward()["y"].tolist() == [1]
