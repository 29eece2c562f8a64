"""The inference program (caffe.net_inference) against the layer-by-layer forward: every
golden layer case (BVLC's and the forks'), every reference model and inference-benchmark net,
and the pycaffe behaviours it must keep."""
import collections
from pathlib import Path

import numpy as np
import pytest
import torch

import caffe
from caffe import net_inference
from caffe.formats import read_net_param
from caffe.layer import Layer, register_layer
from caffe.testing import check_inference, relative_difference
from benchmarks import inference_nets as corpus
from tests.conftest import SHARED, shared_path
from tests.golden_runner import golden_inputs

GOLDEN_FORKS = Path(__file__).resolve().parent / "golden_forks"
BVLC_CASES = sorted(p.name for p in (SHARED / "golden" / "layers").glob("*")
                    if (p / "golden.npz").exists()) or ["(absent)"]
FORK_CASES = sorted(p.name for p in GOLDEN_FORKS.glob("*") if (p / "golden.npz").exists())
MODELS = sorted(p.stem for p in (SHARED / "models").glob("*.prototxt")) or ["(absent)"]


def kinds(net):
    """Op kinds of the net's program: {class name: count} (converter ops by their module)."""
    program = net.plan._program
    assert program is not None, "the program did not run"
    return collections.Counter(type(getattr(fn, "__self__", fn)).__name__
                               for fn, _, _ in program.ops)


# -- golden layer cases, in the TEST phase ----------------------------------------------------
def _golden_net(folder):
    """The case's net in the TEST phase without force_backward (which most cases set for
    their gradients, and which keeps a net on the plain path), and its inputs."""
    golden = np.load(folder / "golden.npz")
    param = read_net_param(folder / "net.prototxt")
    param.force_backward = False
    net = caffe.Net(param, str(folder / "weights.caffemodel"), caffe.TEST)
    return net, golden_inputs(net, golden), golden


def _check_case(folder):
    net, inputs, golden = _golden_net(folder)
    reason = net_inference.why_not(net, 0, len(net.layers) - 1)
    if reason is not None:
        # Only nets that need the plain path may leave it: force_backward (a gradient is
        # wanted) or a Python layer. They run layer by layer, as before.
        assert reason in ("force_backward", "a backward may follow", "Python layers"), reason
        assert net.plan.program(0, len(net.layers) - 1) is None
        return
    check_inference(net, {k: v for k, v in inputs.items() if k in net.inputs})
    if (folder / "phase").read_text().strip() == "TEST":
        for i, top in enumerate(net.top_names["layer"]):
            expected = golden[f"out/t{i}"]
            if expected.size:
                assert relative_difference(net.blobs[top].data.reshape(expected.shape),
                                           expected) <= 1e-4, top


@pytest.mark.parametrize("case", BVLC_CASES)
def test_golden_layer_case_agrees(case):
    _check_case(shared_path("golden", "layers", case))


@pytest.mark.parametrize("case", FORK_CASES)
def test_fork_golden_case_agrees(case):
    _check_case(GOLDEN_FORKS / case)


# -- whole nets -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_reference_model_agrees(name):
    net = caffe.Net(str(shared_path("models", name + ".prototxt")), caffe.TEST)
    for blob_name in net.inputs:
        net.blobs[blob_name].reshape(1, *net.blobs[blob_name].shape[1:])
    net.reshape()
    corpus.randomize(net)
    check_inference(net)
    fused = kinds(net)["FusedConvolution"]
    assert fused == sum(layer.type == "Convolution" for layer in net.layers)


SLOW_CORPUS = {"openpose", "vgg16", "fcn8s", "densenet121"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in SLOW_CORPUS else n for n in corpus.NETS])
def test_benchmark_net_agrees(name, tmp_path):
    entry = corpus.NETS[name]
    if entry.needs_shared:
        shared_path("models")
    net, _, _ = corpus.build(entry, 1, tmp_path)
    x = corpus.inputs(net)
    diffs = {}
    optimize = net.optimize
    for on in (False, True):
        net.optimize = on
        out = net.forward(**x)
        diffs[on] = {k: v.copy() for k, v in out.items()}
    net.optimize = optimize
    for k in diffs[False]:
        assert corpus.relative_error(diffs[True][k], diffs[False][k], k) <= 1e-4, k
    if "detection_out" not in diffs[False]:
        check_inference(net, x)
    assert kinds(net)["FusedConvolution"] > 0


# -- pycaffe's behaviours ----------------------------------------------------------------------
SMALL = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 bias_term: false
                      weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "gaussian" std: 0.2 }
                      bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "pool" type: "Pooling" bottom: "conv2" top: "pool"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.prototxt"
    path.write_text(SMALL)
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.default_rng(1)
    mean, var, factor = net.params["bn1"]
    mean.data[...] = rng.normal(0, 0.2, 16)
    var.data[...] = rng.uniform(0.5, 1.5, 16)
    factor.data[...] = 2.0
    net.params["scale1"][0].data[...] = rng.uniform(0.5, 1.5, 16)
    net.params["scale1"][1].data[...] = rng.normal(0, 0.2, 16)
    net.blobs["data"].data[...] = rng.uniform(-1, 1, (2, 3, 12, 12))
    return net


def _plain(net, **inputs):
    """{blob: value} of a layer-by-layer forward, the net left as it was."""
    optimize = net.optimize
    net.optimize = False
    try:
        net.forward(**inputs)
        return {k: b.data.copy() for k, b in net.blobs.items()}
    finally:
        net.optimize = optimize


def test_small_net_fuses_the_chain_and_agrees(small):
    check_inference(small, {"data": small.blobs["data"].data.copy()})
    ops = kinds(small)
    assert ops["FusedConvolution"] == 2       # conv1 + bn1 + scale1 + relu1, conv2
    assert len(small.plan._program.ops) == 5


def test_blobs_read_after_forward_hold_their_values(small):
    expected = _plain(small)
    small.forward()
    for name, value in expected.items():
        assert relative_difference(small.blobs[name].data, value) < 1e-5, name


def test_a_held_view_of_an_intermediate_blob_follows_each_forward(small):
    small.forward()
    view = small.blobs["conv2"].data            # held across forwards, as scripts do
    rng = np.random.default_rng(5)
    for _ in range(2):
        x = rng.uniform(-1, 1, (2, 3, 12, 12)).astype(np.float32)
        small.forward(data=x)
        got = view.copy()
        assert relative_difference(got, _plain(small, data=x)["conv2"]) < 1e-5


@pytest.mark.parametrize("how", ["temporary view", "held view", "torch", "copy_from"])
def test_weight_writes_reach_the_folded_program(small, how, tmp_path):
    small.forward()
    before = small.blobs["prob"].data.copy()
    held = small.params["conv1"][0].data
    if how == "temporary view":
        small.params["scale1"][0].data[...] *= 1.5
    elif how == "held view":
        small.forward()                          # a forward between taking and writing
        held[...] *= -1.0
    elif how == "torch":
        small._layers[small.layer_index["bn1"]].blobs[1].data.mul_(3.0)
    else:
        other = caffe.Net(str(tmp_path / "small.prototxt"), caffe.TEST)
        other.params["conv1"][0].data[...] = 0.05
        other.save(str(tmp_path / "w.caffemodel"))
        small.copy_from(str(tmp_path / "w.caffemodel"))
    out = small.forward()["prob"].copy()
    assert relative_difference(out, before) > 1e-3, "the write changed nothing"
    assert relative_difference(out, _plain(small)["prob"]) < 1e-5


def test_a_new_input_shape_rebuilds_the_program(small):
    small.forward()
    small.blobs["data"].reshape(3, 3, 12, 12)
    small.blobs["data"].data[...] = np.random.default_rng(2).uniform(-1, 1, (3, 3, 12, 12))
    out = small.forward()["prob"].copy()
    assert out.shape == (3, 5) and small.blobs["conv2"].data.shape == (3, 8, 10, 10)
    assert relative_difference(out, _plain(small)["prob"]) < 1e-5


def test_partial_forward_hooks_and_switches_use_the_plain_path(small, monkeypatch):
    n = len(small.layers)
    assert net_inference.why_not(small, 0, n - 1) is None
    assert net_inference.why_not(small, 0, n - 2) == "a forward of part of the net"
    small.forward()
    expected = small.blobs["conv2"].data.copy()
    small.forward(end="pool")
    assert relative_difference(small.blobs["conv2"].data, expected) < 1e-5
    calls = []
    small.before_forward(calls.append)
    assert net_inference.why_not(small, 0, n - 1) == "forward hooks"
    small.forward()
    assert calls == list(range(n))           # every layer ran as a layer
    monkeypatch.setenv(net_inference.ENV, "0")
    assert net_inference.why_not(small, 0, n - 1) == f"{net_inference.ENV}=0"


def test_nets_that_need_a_backward_run_layer_by_layer(tmp_path):
    path = tmp_path / "fb.prototxt"
    path.write_text("force_backward: true\n" + SMALL)
    net = caffe.Net(str(path), caffe.TEST)
    assert net_inference.why_not(net, 0, len(net.layers) - 1) == "force_backward"
    net.forward()
    assert net.plan._program is None
    train = caffe.Net(str(path), caffe.TRAIN)
    assert net_inference.why_not(train, 0, len(train.layers) - 1) is not None


def test_a_test_net_sharing_weights_sees_each_update(small, tmp_path):
    train = caffe.Net(str(tmp_path / "small.prototxt"), caffe.TEST)
    small.share_with(train)
    small.forward()
    for _ in range(2):
        for layer in train._layers:       # a solver's update: in place, through torch
            for blob in layer.blobs:
                blob.data.mul_(0.9).add_(0.01)
        out = small.forward()["prob"].copy()
        assert relative_difference(out, _plain(small)["prob"]) < 1e-5


@register_layer
class _GrowingData(Layer):
    """A data layer whose batch grows by one image on each forward (a test fixture)."""

    type = "TestGrowingData"
    exact_num_bottom_blobs = 0
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        self.batch = 1

    def reshape(self, bottom, top):
        top[0].reshape(self.batch, 3, 12, 12)

    def forward(self, bottom, top):
        self.batch += 1
        top[0].reshape(self.batch, 3, 12, 12)
        g = torch.Generator().manual_seed(self.batch)
        top[0].data[...] = torch.rand(top[0].shape, generator=g, dtype=top[0].dtype)


def test_a_data_layer_changing_shape_finishes_layer_by_layer(tmp_path):
    text = SMALL.replace('type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 '
                         'dim: 12 dim: 12 } }', 'type: "TestGrowingData" top: "data"')
    path = tmp_path / "grow.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    for batch in (2, 3, 4):
        out = net.forward()["prob"].copy()
        assert out.shape == (batch, 5)
        x = net.blobs["data"].data.copy()
        conv2 = net.blobs["conv2"].data.copy()
        layer = net._layers[0]
        layer.batch -= 1                     # replay the same batch layer by layer
        assert relative_difference(conv2, _plain(net)["conv2"]) < 1e-5
        assert np.array_equal(net.blobs["data"].data, x)


def _loss_net(tmp_path, extra=""):
    """SMALL with labels and a SoftmaxWithLoss (and `extra` layers) in place of its Softmax."""
    text = SMALL.replace('layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }', """
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
""" + extra)
    path = tmp_path / "loss.prototxt"
    path.write_text(text)
    return caffe.Net(str(path), caffe.TEST)


def test_the_test_phase_loss_is_the_plain_one(tmp_path):
    net = _loss_net(tmp_path, 'layer { name: "acc" type: "Accuracy" bottom: "fc" '
                              'bottom: "label" top: "acc" }')
    x = {"data": np.random.default_rng(3).uniform(-1, 1, (2, 3, 12, 12)).astype(np.float32),
         "label": np.array([1, 3], np.float32)}
    n = len(net.layers)
    for name, value in x.items():
        net.blobs[name].data[...] = value
    fast = float(net.forward_from_to(0, n - 1))
    assert net.plan._program is not None
    net.optimize = False
    plain = float(net.forward_from_to(0, n - 1))
    assert fast > 0 and abs(fast - plain) < 1e-5


def test_a_backward_after_the_program_sees_the_forward_it_followed(tmp_path):
    net = _loss_net(tmp_path)
    x = {"data": np.random.default_rng(4).uniform(-1, 1, (2, 3, 12, 12)).astype(np.float32),
         "label": np.array([0, 2], np.float32)}
    grads = []
    for on in (True, False):
        net.optimize = on
        for blobs in net.params.values():
            for b in blobs:
                b.diff[...] = 0
        net.forward(**x)
        assert (net.plan._program is not None) == on
        net.backward()
        grads.append({k: [b.diff.copy() for b in v] for k, v in net.params.items()})
    for name in grads[1]:
        for fast, plain in zip(grads[0][name], grads[1][name]):
            assert relative_difference(fast, plain) < 1e-5, name
    assert np.abs(grads[1]["conv1"][0]).max() > 0


@pytest.mark.parametrize("solver_type", ["SGD", "Adam"])
def test_a_solvers_test_net_sees_its_updates(tmp_path, solver_type):
    _loss_net(tmp_path)             # writes loss.prototxt
    # Frozen statistics: no forward writes a learned blob, only the solver's update.
    path = tmp_path / "loss.prototxt"
    path.write_text(path.read_text().replace(
        'type: "BatchNorm" bottom: "conv1" top: "conv1" }',
        'type: "BatchNorm" bottom: "conv1" top: "conv1" '
        'batch_norm_param { use_global_stats: true } }'))
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "loss.prototxt"}" type: "{solver_type}" base_lr: 0.01 '
        'momentum: 0.9 weight_decay: 0.0005 lr_policy: "fixed" test_iter: 1 '
        'test_interval: 1000 test_initialization: false max_iter: 10 snapshot_after_train: false')
    solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    mean, var, factor = solver.net.params["bn1"]
    mean.data[...], var.data[...], factor.data[...] = 0.1, 2.0, 1.0
    x = {"data": np.random.default_rng(6).uniform(-1, 1, (2, 3, 12, 12)).astype(np.float32),
         "label": np.array([1, 4], np.float32)}
    test = solver.test_nets[0]
    plain = caffe.Net(str(tmp_path / "loss.prototxt"), caffe.TEST)
    plain.optimize = False
    for net in (test, plain):
        net.share_with(solver.net)      # as pycaffe scripts do (solver.test() does it too)
    for net in (solver.net, test, plain):
        for name, value in x.items():
            net.blobs[name].data[...] = value
    losses = [float(test.forward()["loss"])]
    program = test.plan._program
    for _ in range(2):
        solver.step(1)
        losses.append(float(test.forward()["loss"]))
        assert abs(losses[-1] - float(plain.forward()["loss"])) < 1e-5
    assert test.plan._program is not program and losses[-1] < losses[0]   # rebuilt
