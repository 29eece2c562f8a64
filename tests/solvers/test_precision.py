"""Half precision: bf16/fp16 nets with float32 master weights, fp16 loss scaling, fp32 files."""
import numpy as np
import pytest
import torch

import caffe
from caffe import formats
from caffe.errors import CaffeError
from caffe.formats import parse_text
from caffe.net import Net
from caffe.proto import caffe_pb2
from caffe.solvers import precision
from tests.solvers.nets import CLASSIFIER_NET, PARAM_NET, make_solver

# Older torch refuses half precision on the CPU (test_half_precision_on_an_old_torch_cpu).
pytestmark = pytest.mark.skipif(
    torch.torch_version.TorchVersion(torch.__version__) < precision.HALF_CPU_TORCH,
    reason=f"half precision on the CPU needs torch>={precision.HALF_CPU_TORCH}")

# A small convolutional classifier (LeNet's layer types) on a learnable, separable task.
CONV_NET = """name: "conv"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 16 dim: 1 dim: 8 dim: 8 } shape { dim: 16 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "pool" top: "pool" }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SGD = 'base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.0005 random_seed: 3 '


def conv_solver(prec, extra=""):
    solver = make_solver(SGD + extra, net=CONV_NET, dtype=torch.float32, precision=prec)
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 16)
    data = rng.normal(size=(16, 1, 8, 8)) * 0.3
    data[:, :, :4] += label[:, None, None, None] * 1.5     # class 1 is bright on top
    solver.net.blobs["data"].data[...] = data
    solver.net.blobs["label"].data[...] = label
    return solver


def losses(solver, iters):
    out = []
    for _ in range(iters):
        solver.step(1)
        out.append(float(solver.net.blobs["loss"].data))
    return np.array(out)


@pytest.mark.parametrize("prec", ["bf16", "fp16"])
def test_half_training_follows_float32(prec):
    reference, half = losses(conv_solver(None), 40), losses(conv_solver(prec), 40)
    assert half[-1] < 0.5 * half[0], half                  # it learns
    # bf16 keeps 8 bits of mantissa, fp16 11: the runs stay close to float32's.
    tol = 0.05 if prec == "bf16" else 0.01
    assert np.abs(half - reference).max() < tol * max(reference.max(), 1), (half, reference)


@pytest.mark.parametrize("prec, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_nets_compute_in_half_and_masters_are_float32(prec, dtype):
    solver = conv_solver(prec)
    assert solver.net.dtype == dtype and solver.net.blobs["conv"].data.dtype == np.float32
    assert solver.net._blobs[0].data.dtype == dtype     # the tensor; pycaffe sees float32
    assert all(m.dtype == torch.float32 for m in solver.master.params)
    assert all(h.dtype == torch.float32 for h in solver.history)
    solver.step(1)
    for param, master in zip(solver.net.learnable_params, solver.master.params):
        assert torch.equal(param.data, master.data.to(dtype))      # the net holds the rounding
        assert torch.equal(param.diff, master.diff.to(dtype))      # and the step taken


def test_masters_match_float32_sgd_from_the_same_gradients():
    # Steps of 1e-5 / 3 are below bf16's resolution at 1 (2^-7): a bf16 weight alone would not
    # move, the float32 master moves as float32 SGD fed the net's (bf16) gradients does.
    assert torch.ones(1, dtype=torch.bfloat16) - 1e-5 / 3 == 1
    solver = make_solver('base_lr: 0.00001 lr_policy: "fixed"', net=PARAM_NET,
                         dtype=torch.float32, precision="bf16")
    solver.net.params["w1"][0].data[...] = 1.0
    solver.net.blobs["t"].data[...] = 0.0
    w = torch.ones(3, 4)
    for _ in range(50):
        solver.step(1)
        grad = w.to(torch.bfloat16).float() / 3       # EuclideanLoss: (w - t) / num
        w = w - 1e-5 * grad
    assert torch.allclose(solver.master.params[0].data, w, rtol=0, atol=1e-6)
    assert float(1 - w.mean()) > 1e-4


def test_fp16_loss_scaling_saves_small_gradients(monkeypatch):
    # A loss weight of 1e-6 puts the ip layer's top diff (~1e-7) below float16's normal range
    # (6e-5), down where its subnormals keep a bit or two or round to zero.
    net = CLASSIFIER_NET.replace('top: "loss" }', 'top: "loss" loss_weight: 1e-6 }')

    def gradient(prec):
        solver = make_solver('base_lr: 0 lr_policy: "fixed"', net=net, dtype=torch.float32,
                             precision=prec)
        solver.net.params["ip"][0].data[...] = np.linspace(-0.5, 0.5, 12).reshape(3, 4)
        solver.net.blobs["data"].data[...] = np.linspace(-1, 1, 24).reshape(6, 4)
        solver.net.blobs["label"].data[...] = [0, 1, 2, 0, 1, 2]
        seen = []
        scale = solver.master.scale if solver.master else 1.0
        solver.add_callback(None, lambda: seen.append(
            solver.net.learnable_params[0].diff.float() / scale))
        solver.step(1)
        return seen[0]

    exact, scaled = gradient(None), gradient("fp16")
    assert exact.abs().max() > 1e-8
    assert torch.allclose(scaled, exact, rtol=0.01, atol=1e-10)
    monkeypatch.setattr(precision, "INIT_SCALE", 1.0)
    unscaled = gradient("fp16")
    assert not torch.allclose(unscaled, exact, rtol=0.3, atol=0)    # unscaled, they are lost


def test_fp16_overflow_skips_the_update_and_lowers_the_scale(monkeypatch):
    monkeypatch.setattr(precision, "INIT_SCALE", 2.0 ** 40)     # overflows float16 (65504)
    solver = conv_solver("fp16")
    before = [m.data.clone() for m in solver.master.params]
    solver.step(1)
    assert solver.master.scale == 2.0 ** 39 and solver.net.loss_scale == 2.0 ** 39
    assert all(torch.equal(b, m.data) for b, m in zip(before, solver.master.params))
    solver.step(30)
    assert solver.master.scale <= 2.0 ** 15
    assert any(not torch.equal(b, m.data) for b, m in zip(before, solver.master.params))


def test_fp16_scale_grows_after_good_steps(monkeypatch):
    monkeypatch.setattr(precision, "GROWTH_INTERVAL", 3)
    monkeypatch.setattr(precision, "INIT_SCALE", 4.0)
    solver = conv_solver("fp16")
    solver.step(3)
    assert solver.master.scale == 8.0


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_snapshots_are_float32_masters_and_resume_exactly(tmp_path, fmt):
    ext = ".h5" if fmt == "HDF5" else ""
    extra = f'snapshot: 5 snapshot_prefix: "{tmp_path}/s" snapshot_format: {fmt} max_iter: 10'
    full = conv_solver("bf16", extra)
    full.solve()
    model = tmp_path / f"s_iter_5.caffemodel{ext}"
    if fmt == "BINARYPROTO":
        layer = next(lp for lp in formats.read_caffemodel(model).layer if lp.name == "conv")
        assert len(layer.blobs[0].data) == 36 and not layer.blobs[0].double_data
    # The float32 net reads it back as the masters were at iteration 5.
    resumed = conv_solver("bf16", extra.replace("/s", "/r"))
    resumed.solve(str(tmp_path / f"s_iter_5.solverstate{ext}"))
    for a, b in zip(full.master.params, resumed.master.params):
        assert torch.equal(a.data, b.data)
    plain = Net(parse_text(CONV_NET, caffe_pb2.NetParameter()), caffe.TEST,
                weights=str(tmp_path / f"s_iter_10.caffemodel{ext}"))
    assert torch.equal(plain.learnable_params[0].data, full.master.params[0].data)


def test_weights_set_through_pycaffe_reach_the_masters(tmp_path):
    solver = make_solver(SGD.replace("base_lr: 0.05", "base_lr: 0"), net=CONV_NET,
                         dtype=torch.float32, precision="bf16")
    solver.net.params["ip"][0].data[...] = 0.25
    solver.step(1)
    ip = solver.net.layer_index["ip"]
    master = solver.master.params[solver.net.learnable_param_ids[solver.net.param_id_vecs[ip][0]]]
    assert torch.all(master.data == 0.25)
    plain = conv_solver(None)
    plain.net.params["conv"][0].data[...] = 0.5
    plain.net.save(str(tmp_path / "w.caffemodel"))
    solver.net.copy_from(str(tmp_path / "w.caffemodel"))
    solver.step(1)
    assert torch.all(solver.master.params[0].data == 0.5)


def test_half_blobs_mirror_as_float32_arrays():
    net = Net(parse_text(CLASSIFIER_NET, caffe_pb2.NetParameter()), caffe.TRAIN,
              dtype=torch.bfloat16)
    data = net.blobs["data"].data
    assert data.dtype == np.float32
    data[...] = 1.5
    assert net._blobs[net.blob_index["data"]].data.dtype == torch.bfloat16
    assert torch.all(net._blobs[net.blob_index["data"]].data == 1.5)
    net.forward()
    assert np.isfinite(net.blobs["loss"].data).all()


def test_unknown_precision_is_named():
    with pytest.raises(CaffeError, match="unknown precision 'fp8'"):
        make_solver(SGD, net=CONV_NET, dtype=torch.float32, precision="fp8")
    with pytest.raises(CaffeError, match="float32 master"):
        make_solver(SGD, net=CONV_NET, dtype=torch.float64, precision="bf16")


def test_fp32_precision_changes_nothing():
    solver = make_solver(SGD, net=CONV_NET, dtype=torch.float32, precision="fp32")
    assert solver.master is None and solver.net.dtype == torch.float32


def test_half_precision_on_an_old_torch_cpu(monkeypatch):
    """torch 2.1 has no float16 CPU convolution and torch 2.4's bfloat16 CPU kernels train
    LeNet far from float32 (make compat): there the CPU refuses half precision, naming torch."""
    monkeypatch.setattr(torch, "__version__", "2.4.1+cu121")
    for name in ("bf16", "fp16"):
        with pytest.raises(CaffeError, match=r"needs torch>=2\.13 \(this is torch 2\.4\.1"):
            precision.compute_dtype(name, device="cpu")
    assert precision.compute_dtype("fp32", device="cpu") == torch.float32
    assert precision.compute_dtype("bf16", device="cuda") == torch.bfloat16
