"""Every public name of BVLC's pycaffe and `caffe` command exists here with BVLC's meaning.

The names are enumerated from BVLC's own sources in the reference tarball (python/caffe/
__init__.py, pycaffe.py, io.py, the boost-python module _caffe.cpp and tools/caffe.cpp), so a
name BVLC has and this table lacks fails the test. Each name has a behaviour check below
(what it does, not only that it exists); docs/api_compat.md lists the same table.
"""
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("python/caffe/__init__.py", "python/caffe/pycaffe.py", "python/caffe/io.py",
           "python/caffe/_caffe.cpp", "tools/caffe.cpp")


def bvlc_sources():
    with tarfile.open(shared_path("reference", "bvlc-caffe-9b89154.tar.gz")) as tar:
        return {name: tar.extractfile(f"caffe-9b89154/{name}").read().decode()
                for name in SOURCES}


def bvlc_names(src):
    """('scope', 'name') for every public name BVLC's sources define."""
    names = []
    for line in src["python/caffe/__init__.py"].splitlines():
        m = re.match(r"from \S+ import (.+)", line)
        if m:
            names += [("caffe", n.strip()) for n in m.group(1).split(",")]
        elif line.startswith("from . import "):
            names += [("caffe", line.split()[-1])]
    names += [("Net", n) for n in re.findall(r"^Net\.(\w+) =", src["python/caffe/pycaffe.py"],
                                              re.M)]
    io_src = src["python/caffe/io.py"]
    names += [("caffe.io", n) for n in re.findall(r"^def (\w+)", io_src, re.M)]
    names += [("caffe.io", n) for n in re.findall(r"^class (\w+)", io_src, re.M)]
    names += [("Transformer", n) for n in re.findall(r"^    def (\w+)", io_src, re.M)
              if not n.startswith("__")]
    cpp = src["python/caffe/_caffe.cpp"]
    module = cpp[cpp.index("BOOST_PYTHON_MODULE"):]
    names += [("caffe", n) for n in re.findall(r'bp::def\("(\w+)"', module)]
    names += [("caffe", n) for n in re.findall(r'scope\(\)\.attr\("(\w+)"\)', module)]
    starts = [m.start() for m in re.finditer(r"bp::class_<", module)] + [len(module)]
    for a, b in zip(starts, starts[1:]):
        block = module[a:b]
        cls = re.search(r'\(\s*"(\w+)"', block).group(1)
        names.append(("class", cls))
        members = re.findall(r'\.(?:def|add_property)\("(\w+)"', block)
        names += [(cls, n) for n in members if n != "__init__"]
    tools = src["tools/caffe.cpp"]
    names += [("caffe -flag", n) for n in re.findall(r"DEFINE_\w+\((\w+),", tools)]
    names += [("caffe command", n)
              for n in re.findall(r"^RegisterBrewFunction\((\w+)\);", tools, re.M)]
    return list(dict.fromkeys(names))      # once each (overloads repeat), in BVLC's order


# -- the objects the checks use ------------------------------------------------------------
DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""
TRAIN = """name: "tiny_train"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 }
                           data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = """net: "{net}"
base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 2 max_iter: 4
display: 0 snapshot_prefix: "{prefix}" random_seed: 3 test_iter: 1 test_interval: 100
"""


class Ctx:
    def __init__(self, tmp):
        self.tmp = tmp
        self.deploy = tmp / "deploy.prototxt"
        self.deploy.write_text(DEPLOY)
        self.train = tmp / "train.prototxt"
        self.train.write_text(TRAIN)
        self.solver_file = tmp / "solver.prototxt"
        self.solver_file.write_text(SOLVER.format(net=self.train, prefix=tmp / "snap"))
        self.weights = tmp / "w.caffemodel"
        caffe.Net(str(self.deploy), caffe.TEST).save(str(self.weights))

    def net(self):
        return caffe.Net(str(self.deploy), str(self.weights), caffe.TEST)

    def solver(self, cls=None):
        return (cls or caffe.SGDSolver)(str(self.solver_file))


@pytest.fixture
def ctx(tmp_path):
    return Ctx(tmp_path)


CHECKS = {}


def check(*keys):
    def register(fn):
        for key in keys:
            CHECKS[key] = fn
        return fn
    return register


def same_forward(a, b):
    np.testing.assert_allclose(a.forward()["prob"], b.forward()["prob"], rtol=1e-6)


# -- module-level names ----------------------------------------------------------------------
@check(("caffe", "Net"))
def _net_forms(ctx):
    a = caffe.Net(str(ctx.deploy), caffe.TEST, weights=str(ctx.weights))
    b = caffe.Net(str(ctx.deploy), str(ctx.weights), caffe.TEST)       # legacy form
    c = caffe.Net(str(ctx.deploy), phase=caffe.TEST, level=0, stages=[],
                  weights=str(ctx.weights))
    for net in (b, c):
        same_forward(a, net)


@check(*[("caffe", n) for n in ("SGDSolver", "NesterovSolver", "AdaGradSolver",
                                 "RMSPropSolver", "AdaDeltaSolver", "AdamSolver")],
       *[("class", n) for n in ("Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver",
                                 "RMSPropSolver", "AdaDeltaSolver", "AdamSolver")])
def _solver_classes(ctx):
    types = {"SGDSolver": "SGD", "NesterovSolver": "Nesterov", "AdaGradSolver": "AdaGrad",
             "RMSPropSolver": "RMSProp", "AdaDeltaSolver": "AdaDelta", "AdamSolver": "Adam"}
    for name, solver_type in types.items():
        s = ctx.solver(getattr(caffe, name))
        assert s.type == solver_type and isinstance(s, caffe.SGDSolver)
        before = s.net.params["ip"][0].data.copy()
        s.step(1)
        assert s.iter == 1 and not np.array_equal(before, s.net.params["ip"][0].data)


@check(("caffe", "get_solver"))
def _get_solver(ctx):
    text = ctx.solver_file.read_text() + 'type: "Adam"\n'
    ctx.solver_file.write_text(text)
    assert isinstance(caffe.get_solver(str(ctx.solver_file)), caffe.AdamSolver)


@check(("caffe", "NCCL"), ("class", "NCCL"), ("NCCL", "new_uid"), ("NCCL", "bcast"),
       ("caffe", "has_nccl"))
def _nccl(ctx):
    assert caffe.has_nccl() is True
    uid = caffe.NCCL.new_uid()
    assert isinstance(uid, bytes) and uid != caffe.NCCL.new_uid()
    assert callable(caffe.NCCL.bcast) and callable(caffe.NCCL.on_gradients_ready)
    # One worker: broadcasting and averaging over a world of one change nothing.
    caffe.set_solver_count(1)
    caffe.set_solver_rank(0)
    s = ctx.solver()
    nccl = caffe.NCCL(s, uid)
    try:
        before = s.net.params["ip"][0].data.copy()
        nccl.bcast()
        np.testing.assert_array_equal(before, s.net.params["ip"][0].data)
        s.add_callback(nccl)
        s.step(1)
        assert s.iter == 1
    finally:
        nccl.worker.close()


@check(("caffe", "Timer"), ("class", "Timer"), ("Timer", "start"), ("Timer", "stop"),
       ("Timer", "ms"))
def _timer(ctx):
    import time
    t = caffe.Timer()
    assert t.ms == 0.0                          # never run: 0, with Caffe's warning
    t.start()
    time.sleep(0.02)
    t.stop()
    first = t.ms
    assert 15 < first < 2000 and t.ms == first  # stopped: the interval stays
    t.start()
    assert t.ms < first                         # reading a running timer stops it


@check(("caffe", "init_log"), ("caffe", "log"))
def _logging(ctx):
    import subprocess
    import sys
    code = ("import caffe; caffe.log('hidden'); caffe.init_log(); caffe.log('Using devices [0]');"
            "caffe.init_log(1); caffe.log('not shown')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 0 and len(lines) == 1, run.stderr
    assert re.match(r"I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ .*\] Using devices \[0\]$", lines[0])


@check(("caffe", "set_mode_cpu"), ("caffe", "set_mode_gpu"), ("caffe", "set_device"))
def _modes(ctx):
    import torch
    from caffe import common
    caffe.set_mode_gpu()
    assert common.mode() == (common.GPU if torch.cuda.is_available() else common.CPU)
    caffe.set_device(0)
    caffe.set_mode_cpu()
    assert common.mode() == common.CPU and ctx.net()._blobs[0].data.device.type == "cpu"


@check(("caffe", "set_random_seed"))
def _seed(ctx):
    caffe.set_random_seed(5)
    a = caffe.Net(str(ctx.deploy), caffe.TEST).params["conv"][0].data.copy()
    caffe.set_random_seed(5)
    np.testing.assert_array_equal(a, caffe.Net(str(ctx.deploy), caffe.TEST).params["conv"][0].data)


@check(("caffe", "layer_type_list"))
def _layer_types(ctx):
    types = caffe.layer_type_list()
    assert {"Convolution", "InnerProduct", "Python", "SoftmaxWithLoss", "Data"} <= set(types)
    assert list(types) == sorted(types)


@check(("caffe", "solver_count"), ("caffe", "set_solver_count"), ("caffe", "solver_rank"),
       ("caffe", "set_solver_rank"), ("caffe", "set_multiprocess"))
def _solver_counts(ctx):
    from caffe import parallel
    caffe.set_solver_count(3)
    caffe.set_solver_rank(2)
    caffe.set_multiprocess(True)
    try:
        assert (caffe.solver_count(), caffe.solver_rank(), parallel.multiprocess()) == \
            (3, 2, True)
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)
        caffe.set_multiprocess(False)


@check(("caffe", "Layer"), ("class", "Layer"))
def _python_layer_base(ctx):
    assert issubclass(caffe.Layer, object) and hasattr(caffe.Layer, "setup")
    layer = ctx.net().layers[1]
    assert layer.type == "Convolution" and len(layer.blobs) == 2


@check(("caffe", "__version__"))
def _version(ctx):
    assert re.fullmatch(r"\d+\.\d+\.\d+", caffe.__version__)


@check(("caffe", "TRAIN"), ("caffe", "TEST"))
def _phases(ctx):
    assert (caffe.TRAIN, caffe.TEST) == (caffe_pb2.TRAIN, caffe_pb2.TEST) == (0, 1)


@check(("caffe", "Classifier"), ("caffe", "Detector"))
def _classifier_detector(ctx):
    im = np.random.default_rng(0).random((6, 7, 3)).astype(np.float32)
    clf = caffe.Classifier(str(ctx.deploy), str(ctx.weights), image_dims=(5, 5))
    pred = clf.predict([im, im], oversample=False)
    assert pred.shape == (2, 3)
    np.testing.assert_allclose(pred.sum(1), 1, rtol=1e-5)
    det = caffe.Detector(str(ctx.deploy), str(ctx.weights), context_pad=0)
    path = ctx.tmp / "im.png"
    from PIL import Image
    Image.fromarray((im * 255).astype(np.uint8)).save(path)
    out = det.detect_windows([(str(path), [[0, 0, 4, 4]])])
    assert out[0]["prediction"].shape == (3,) and out[0]["filename"] == str(path)


@check(("caffe", "io"))
def _io_module(ctx):
    assert caffe.io.Transformer is not None and callable(caffe.io.load_image)


@check(("caffe", "layers"), ("caffe", "params"), ("caffe", "NetSpec"), ("caffe", "to_proto"))
def _net_spec(ctx):
    from caffe import layers as L, params as P
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    n.ip = L.InnerProduct(n.data, num_output=3, weight_filler=dict(type="xavier"))
    n.out = L.ReLU(n.ip, in_place=True)
    proto = n.to_proto()
    assert [l.type for l in proto.layer] == ["Input", "InnerProduct", "ReLU"]
    assert proto.layer[2].top == ["ip"] and P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    # to_proto names layers by type and count (BVLC's autonames); NetSpec by attribute.
    assert caffe.to_proto(n.out).layer[-1].name == "ReLU1"
    assert proto.layer[-1].name == "out"


# -- Net -------------------------------------------------------------------------------------
@check(("class", "Net"), ("Net", "blobs"), ("Net", "_blobs"), ("Net", "_blob_names"))
def _net_blobs(ctx):
    net = ctx.net()
    assert list(net.blobs) == ["data", "conv", "ip", "prob"] == list(net._blob_names)
    assert net.blobs["conv"].data.shape == (2, 2, 2, 2)
    assert len(net._blobs) == 4 and tuple(net._blobs[1].shape) == (2, 2, 2, 2)


@check(("Net", "params"), ("Net", "layer_dict"), ("Net", "layers"), ("Net", "_layer_names"),
       ("class", "LayerVec"))
def _net_params_layers(ctx):
    net = ctx.net()
    assert list(net.params) == ["conv", "ip"] and net.params["ip"][0].data.shape == (3, 8)
    assert list(net.layer_dict) == ["data", "conv", "ip", "prob"] == list(net._layer_names)
    assert [l.type for l in net.layers] == ["Input", "Convolution", "InnerProduct", "Softmax"]
    assert net.layer_dict["ip"].blobs[0].data is not None and len(net.layers) == 4


@check(("Net", "blob_loss_weights"), ("Net", "_blob_loss_weights"), ("class", "DtypeVec"))
def _loss_weights(ctx):
    net = caffe.Net(str(ctx.train), caffe.TRAIN)
    assert net.blob_loss_weights["loss"] == 1.0 and net.blob_loss_weights["ip"] == 0.0
    assert list(net._blob_loss_weights) == list(net.blob_loss_weights.values())


@check(("Net", "inputs"), ("Net", "outputs"), ("Net", "_inputs"), ("Net", "_outputs"),
       ("class", "IntVec"), ("class", "StringVec"))
def _inputs_outputs(ctx):
    net = ctx.net()
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert list(net._inputs) == [0] and list(net._outputs) == [3]


@check(("Net", "top_names"), ("Net", "bottom_names"), ("Net", "_top_ids"),
       ("Net", "_bottom_ids"))
def _names(ctx):
    net = ctx.net()
    assert net.top_names["conv"] == ["conv"] and net.bottom_names["ip"] == ["conv"]
    assert list(net._top_ids(1)) == [1] and list(net._bottom_ids(2)) == [1]


@check(("Net", "forward"), ("Net", "_forward"))
def _forward(ctx):
    net = ctx.net()
    x = np.random.default_rng(1).random((2, 3, 4, 4)).astype(np.float32)
    out = net.forward(data=x)
    assert list(out) == ["prob"]
    np.testing.assert_allclose(out["prob"].sum(1), 1, rtol=1e-5)
    partial = net.forward(start="conv", end="ip", blobs=["conv"])
    assert set(partial) == {"ip", "conv"}
    net._forward(0, 1)


@check(("Net", "backward"), ("Net", "_backward"))
def _backward(ctx):
    text = ctx.deploy.read_text().replace('name: "tiny"', 'name: "tiny"\nforce_backward: true')
    ctx.deploy.write_text(text)
    net = ctx.net()
    net.forward()
    diff = np.ones((2, 3), np.float32)
    net.blobs["ip"].diff[...] = diff
    got = net.backward(start="ip", end="ip")
    assert list(got) == ["conv"]            # BVLC 1.0: the diffs of the end layer's bottoms
    w = net.params["ip"][0].data
    np.testing.assert_allclose(got["conv"].reshape(2, -1), diff @ w, rtol=1e-5)
    net._backward(2, 2)


@check(("Net", "forward_all"), ("Net", "_batch"))
def _forward_all(ctx):
    net = ctx.net()
    x = np.random.default_rng(2).random((5, 3, 4, 4)).astype(np.float32)
    out = net.forward_all(data=x)["prob"]
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out[4], net.forward(data=x[[4, 4]])["prob"][0], rtol=1e-5)
    assert len(list(net._batch({"data": x}))) == 3


@check(("Net", "forward_backward_all"))
def _forward_backward_all(ctx):
    text = ctx.deploy.read_text().replace('name: "tiny"', 'name: "tiny"\nforce_backward: true')
    ctx.deploy.write_text(text)
    net = ctx.net()
    x = np.random.default_rng(3).random((3, 3, 4, 4)).astype(np.float32)
    outs, diffs = net.forward_backward_all(data=x, prob=np.ones((3, 3), np.float32))
    assert outs["prob"].shape == (3, 3) and diffs["data"].shape == (3, 3, 4, 4)


@check(("Net", "set_input_arrays"), ("Net", "_set_input_arrays"))
def _set_input_arrays(ctx):
    p = ctx.tmp / "mem.prototxt"
    p.write_text('layer { name: "m" type: "MemoryData" top: "data" top: "label" '
                 'memory_data_param { batch_size: 2 channels: 1 height: 1 width: 3 } }')
    net = caffe.Net(str(p), caffe.TEST)
    data = np.arange(12, dtype=np.float32).reshape(4, 1, 1, 3)
    net.set_input_arrays(data, np.arange(4, dtype=np.float32))
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    net._set_input_arrays(data[2:], np.zeros(2, np.float32))
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[2:])


@check(("Net", "reshape"))
def _reshape(ctx):
    net = ctx.net()
    net.blobs["data"].reshape(5, 3, 4, 4)
    net.reshape()
    assert net.blobs["prob"].data.shape == (5, 3)


@check(("Net", "clear_param_diffs"))
def _clear(ctx):
    net = caffe.Net(str(ctx.train), caffe.TRAIN)
    net.forward()
    net.backward()
    assert np.abs(net.params["ip"][0].diff).sum() > 0
    net.clear_param_diffs()
    assert np.abs(net.params["ip"][0].diff).sum() == 0


@check(("Net", "copy_from"), ("Net", "save"), ("Net", "share_with"))
def _copy_save_share(ctx):
    net = ctx.net()
    fresh = caffe.Net(str(ctx.deploy), caffe.TEST)
    fresh.copy_from(str(ctx.weights))
    same_forward(net, fresh)
    path = ctx.tmp / "again.caffemodel"
    net.save(str(path))
    assert caffe_pb2.NetParameter.FromString(path.read_bytes()).layer[1].name == "conv"
    other = caffe.Net(str(ctx.deploy), caffe.TEST)
    other.share_with(net)
    net.params["ip"][0].data[...] = 0.5
    assert np.all(other.params["ip"][0].data == 0.5)


@check(("Net", "save_hdf5"), ("Net", "load_hdf5"))
def _hdf5(ctx):
    import h5py
    net = ctx.net()
    path = ctx.tmp / "w.h5"
    net.save_hdf5(str(path))
    with h5py.File(path) as f:
        # A group per layer, as Net::ToHDF5 writes them; datasets for the learned blobs.
        assert sorted(f["data"]) == ["conv", "data", "ip", "prob"]
        assert sorted(f["data/ip"]) == ["0", "1"] and not len(f["data/prob"])
    fresh = caffe.Net(str(ctx.deploy), caffe.TEST)
    fresh.load_hdf5(str(path))
    same_forward(net, fresh)


@check(("Net", "before_forward"), ("Net", "after_forward"), ("Net", "before_backward"),
       ("Net", "after_backward"))
def _hooks(ctx):
    net = caffe.Net(str(ctx.train), caffe.TRAIN)
    calls = []
    net.before_forward(lambda i: calls.append(("bf", i)))
    net.after_forward(lambda i: calls.append(("af", i)))
    net.before_backward(lambda i: calls.append(("bb", i)))
    net.after_backward(lambda i: calls.append(("ab", i)))
    net.forward()
    assert calls == [(k, i) for i in range(3) for k in ("bf", "af")]
    calls.clear()
    net.backward()
    assert calls == [(k, i) for i in (2, 1, 0) for k in ("bb", "ab")]


# -- Blob, Layer, vectors --------------------------------------------------------------------
@check(("class", "Blob"), ("Blob", "shape"), ("Blob", "num"), ("Blob", "channels"),
       ("Blob", "height"), ("Blob", "width"), ("Blob", "count"), ("Blob", "reshape"),
       ("Blob", "data"), ("Blob", "diff"))
def _blob(ctx):
    b = ctx.net().blobs["data"]
    assert tuple(b.shape) == (2, 3, 4, 4) and (b.num, b.channels, b.height, b.width) == \
        (2, 3, 4, 4)
    assert b.count == 96
    b.data[...] = 7
    assert b.data.dtype == np.float32 and np.all(b.data == 7)   # a view, written in place
    b.diff[0] = 1
    assert b.diff.sum() == 48
    b.reshape(1, 3, 5, 5)
    assert b.data.shape == (1, 3, 5, 5) and b.count == 75


@check(("Blob", "_gpu_data_ptr"), ("Blob", "_gpu_diff_ptr"))
def _gpu_ptrs(ctx):
    import torch
    b = ctx.net().blobs["data"]
    if torch.cuda.is_available():
        caffe.set_mode_gpu()
        try:
            g = ctx.net().blobs["data"]
            assert g._gpu_data_ptr == g._blob.data.data_ptr() and g._gpu_diff_ptr > 0
        finally:
            caffe.set_mode_cpu()
    with pytest.raises(caffe.CaffeError, match="not a GPU"):
        b._gpu_data_ptr


@check(("Layer", "blobs"), ("Layer", "setup"), ("Layer", "reshape"), ("Layer", "type"),
       ("class", "BlobVec"), ("BlobVec", "add_blob"), ("class", "RawBlobVec"),
       ("class", "BoolVec"), ("class", "LayerParameter"))
def _layer(ctx):
    net = ctx.net()
    conv = net.layers[1]
    assert conv.type == "Convolution" and conv.blobs[0].data.shape == (2, 3, 3, 3)
    net.blobs["data"].reshape(1, 3, 6, 6)
    net.layers[1].reshape()
    assert net.blobs["conv"].data.shape == (1, 2, 4, 4)
    net.layers[1].setup()
    conv.blobs.add_blob(4, 1)
    assert len(conv.blobs) == 3 and conv.blobs[2].data.shape == (4, 1)


@check(("class", "NetVec"), ("Solver", "net"), ("Solver", "test_nets"), ("Solver", "iter"))
def _solver_nets(ctx):
    s = ctx.solver()
    assert isinstance(s.net, caffe.Net) and s.net.phase == caffe.TRAIN
    assert len(s.test_nets) == 1 and s.test_nets[0].phase == caffe.TEST and s.iter == 0


@check(("class", "SolverParameter"), ("SolverParameter", "max_iter"),
       ("SolverParameter", "display"), ("SolverParameter", "layer_wise_reduce"),
       ("SolverParameter", "base_lr"), ("Solver", "param"), ("SGDSolver", "lr"))
def _solver_param(ctx):
    s = ctx.solver()
    assert (s.param.max_iter, s.param.display, s.param.layer_wise_reduce) == (4, 0, True)
    assert s.lr == pytest.approx(0.1)
    s.param.base_lr = 0.5                                  # writable, and used
    assert s.lr == pytest.approx(0.5)
    s.step(2)
    assert s.lr == pytest.approx(0.25)                     # step policy, gamma 0.5


@check(("Solver", "add_callback"))
def _callbacks(ctx):
    s = ctx.solver()
    seen = []
    s.add_callback(lambda: seen.append(("start", s.iter)), lambda: seen.append(("grad", s.iter)))
    s.step(2)
    assert seen == [("start", 0), ("grad", 0), ("start", 1), ("grad", 1)]


@check(("Solver", "solve"), ("Solver", "step"), ("Solver", "snapshot"), ("Solver", "restore"))
def _solve_snapshot_restore(ctx):
    s = ctx.solver()
    s.step(2)
    s.snapshot()
    state = ctx.tmp / "snap_iter_2.solverstate"
    assert state.exists() and (ctx.tmp / "snap_iter_2.caffemodel").exists()
    s.solve()
    assert s.iter == 4 and (ctx.tmp / "snap_iter_4.caffemodel").exists()
    r = ctx.solver()
    r.restore(str(state))
    assert r.iter == 2
    r.solve(str(state))
    np.testing.assert_allclose(r.net.params["ip"][0].data, s.net.params["ip"][0].data,
                               rtol=1e-5)


@check(("Solver", "share_weights"))
def _share_weights(ctx):
    s = ctx.solver()
    other = caffe.Net(str(ctx.train), caffe.TEST)
    s.share_weights(other)
    s.step(1)
    np.testing.assert_array_equal(other.params["ip"][0].data, s.net.params["ip"][0].data)


@check(("Solver", "apply_update"))
def _apply_update(ctx):
    s = ctx.solver()
    s.net.forward()
    s.net.backward()
    before = s.net.params["ip"][0].data.copy()
    grad = s.net.params["ip"][0].diff.copy()
    s.apply_update()
    # SGD, weight decay 0: w -= lr * grad.
    np.testing.assert_allclose(s.net.params["ip"][0].data, before - 0.1 * grad, rtol=1e-5,
                               atol=1e-7)
    assert s.iter == 0                                   # ApplyUpdate does not count


# -- caffe.io --------------------------------------------------------------------------------
@check(("caffe.io", "blobproto_to_array"), ("caffe.io", "array_to_blobproto"))
def _blobproto(ctx):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    proto = caffe.io.array_to_blobproto(a)
    assert list(proto.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(proto), a)


@check(("caffe.io", "arraylist_to_blobprotovector_str"),
       ("caffe.io", "blobprotovector_str_to_arraylist"))
def _blobprotovector(ctx):
    arrays = [np.ones((1, 2), np.float32), np.zeros((3,), np.float32)]
    text = caffe.io.arraylist_to_blobprotovector_str(arrays)
    assert isinstance(text, bytes)
    back = caffe.io.blobprotovector_str_to_arraylist(text)
    assert [b.shape for b in back] == [(1, 2), (3,)]


@check(("caffe.io", "array_to_datum"), ("caffe.io", "datum_to_array"))
def _datum(ctx):
    a = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    d = caffe.io.array_to_datum(a, label=4)
    assert (d.channels, d.height, d.width, d.label) == (3, 2, 2, 4) and d.data == a.tobytes()
    np.testing.assert_array_equal(caffe.io.datum_to_array(d), a)
    f = caffe.io.array_to_datum(a.astype(np.float64))
    assert len(f.float_data) == 12


@check(("caffe.io", "Transformer"), ("Transformer", "preprocess"), ("Transformer", "deprocess"),
       ("Transformer", "set_transpose"), ("Transformer", "set_channel_swap"),
       ("Transformer", "set_raw_scale"), ("Transformer", "set_mean"),
       ("Transformer", "set_input_scale"))
def _transformer(ctx):
    t = caffe.io.Transformer({"data": (1, 3, 2, 2)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    im = np.random.default_rng(4).random((2, 2, 3)).astype(np.float32)
    out = t.preprocess("data", im)
    expected = (im.transpose(2, 0, 1)[::-1] * 255 - np.array([10, 20, 30.0])[:, None, None]) \
        * 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    np.testing.assert_allclose(t.deprocess("data", out), im, rtol=1e-5, atol=1e-6)


@check(("caffe.io", "load_image"))
def _load_image(ctx):
    from PIL import Image
    path = ctx.tmp / "rgb.png"
    Image.fromarray(np.full((3, 4, 3), 255, np.uint8)).save(path)
    assert caffe.io.load_image(str(path)).shape == (3, 4, 3)
    grey = caffe.io.load_image(str(path), color=False)
    assert grey.shape == (3, 4, 1) and np.allclose(grey, 1.0)


@check(("caffe.io", "resize_image"))
def _resize(ctx):
    pytest.importorskip("skimage")
    im = np.random.default_rng(5).random((4, 6, 3)).astype(np.float32)
    for order in (0, 1, 3):
        assert caffe.io.resize_image(im, (8, 3), interp_order=order).shape == (8, 3, 3)


@check(("caffe.io", "oversample"))
def _oversample(ctx):
    ims = np.random.default_rng(6).random((2, 6, 6, 1)).astype(np.float32)
    crops = caffe.io.oversample(ims, (4, 4))
    assert crops.shape == (20, 4, 4, 1)
    np.testing.assert_array_equal(crops[4], ims[0, 1:5, 1:5])
    np.testing.assert_array_equal(crops[5], ims[0, :4, :4][:, ::-1])


# -- the caffe command -----------------------------------------------------------------------
def caffe_cli(*args):
    import io
    import contextlib
    from caffe.tools.caffe import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


@check(("caffe -flag", "solver"), ("caffe command", "train"), ("caffe -flag", "sigint_effect"),
       ("caffe -flag", "sighup_effect"))
def _cli_train(ctx):
    code, err = caffe_cli("train", "-solver", str(ctx.solver_file), "-sigint_effect", "none",
                          "-sighup_effect", "stop")
    assert code == 0 and (ctx.tmp / "snap_iter_4.caffemodel").exists(), err[-2000:]


@check(("caffe -flag", "snapshot"), ("caffe -flag", "weights"))
def _cli_resume_finetune(ctx):
    assert caffe_cli("train", "-solver", str(ctx.solver_file))[0] == 0
    text = ctx.solver_file.read_text().replace("max_iter: 4", "max_iter: 6")
    ctx.solver_file.write_text(text)
    code, err = caffe_cli("train", "-solver", str(ctx.solver_file), "-snapshot",
                          str(ctx.tmp / "snap_iter_4.solverstate"))
    assert code == 0 and "Resuming from" in err and (ctx.tmp / "snap_iter_6.caffemodel").exists()
    code, err = caffe_cli("train", "-solver", str(ctx.solver_file), "-weights",
                          str(ctx.tmp / "snap_iter_6.caffemodel"))
    assert code == 0, err[-2000:]
    code, err = caffe_cli("train", "-solver", str(ctx.solver_file), "-weights", "x",
                          "-snapshot", "y")
    assert code != 0


@check(("caffe -flag", "model"), ("caffe command", "test"), ("caffe -flag", "iterations"))
def _cli_test(ctx):
    weights = ctx.tmp / "train.caffemodel"
    caffe.Net(str(ctx.train), caffe.TEST).save(str(weights))
    code, err = caffe_cli("test", "-model", str(ctx.train), "-weights", str(weights),
                          "-iterations", "3")
    assert code == 0 and err.count("Batch ") == 3 and "Loss: " in err, err[-2000:]


@check(("caffe command", "time"), ("caffe -flag", "phase"))
def _cli_time(ctx):
    code, err = caffe_cli("time", "-model", str(ctx.deploy), "-iterations", "2",
                          "-phase", "TEST")
    assert code == 0 and "Average Forward pass" in err and "Total Time" in err, err[-2000:]
    backward = float(re.search(r"Average Backward pass: ([\d.e+-]+) ms", err).group(1))
    assert backward > 0


@check(("caffe -flag", "level"), ("caffe -flag", "stage"))
def _cli_level_stage(ctx):
    p = ctx.tmp / "staged.prototxt"
    p.write_text(DEPLOY.replace('layer { name: "prob"', 'layer { include { stage: "s" } '
                                'name: "extra" type: "ReLU" bottom: "ip" top: "ip" }\n'
                                'layer { name: "prob"'))
    code, err = caffe_cli("time", "-model", str(p), "-iterations", "1", "-stage", "s",
                          "-level", "0", "-phase", "TEST")
    assert code == 0 and re.search(r"extra\s+forward:", err), err[-2000:]
    code, err = caffe_cli("time", "-model", str(p), "-iterations", "1", "-phase", "TEST")
    assert code == 0 and not re.search(r"extra\s+forward:", err)


@check(("caffe -flag", "gpu"), ("caffe command", "device_query"))
def _cli_gpu(ctx):
    import torch
    code, err = caffe_cli("device_query")
    assert code == 0
    code, err = caffe_cli("test", "-model", str(ctx.train), "-iterations", "1", "-gpu", "0")
    assert (code == 0) == torch.cuda.is_available()


# -- the test --------------------------------------------------------------------------------
NAMES = None


def _names():
    global NAMES
    if NAMES is None:
        NAMES = bvlc_names(bvlc_sources())
    return NAMES


def test_enumeration_finds_bvlc_names():
    names = _names()
    assert ("Net", "save_hdf5") in names and ("caffe", "has_nccl") in names
    assert ("caffe -flag", "sighup_effect") in names and ("Blob", "count") in names
    assert len(names) > 120


def test_every_bvlc_name_has_a_check():
    missing = [f"{scope} {name}" for scope, name in _names() if (scope, name) not in CHECKS]
    assert not missing, "BVLC names without a behaviour check here: " + ", ".join(missing)


def test_docs_table_lists_every_bvlc_name():
    table = (ROOT / "docs" / "api_compat.md").read_text()
    rows = set(re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", table, re.M))
    missing = [f"{s} {n}" for s, n in _names() if (s, n) not in rows]
    assert not missing, "docs/api_compat.md lacks: " + ", ".join(missing)


@pytest.mark.parametrize("check_fn", sorted(set(CHECKS.values()), key=lambda f: f.__name__),
                         ids=lambda f: f.__name__.strip("_"))
def test_bvlc_name_behaves(check_fn, ctx):
    check_fn(ctx)
