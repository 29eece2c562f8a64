"""Shared by the export tests: a fixed weight recipe and the three-way comparison
(caffe.Net forward, the ONNX model in onnxruntime, the to_torch module)."""
import importlib.util

import numpy as np
import pytest
import torch

import caffe
import caffe.export

TOL = 1e-4      # relative to the output's largest magnitude, as for the golden cases
# Without onnx / onnxruntime (test extras) the torch half of each check still runs.
HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))


def fill_weights(net, seed=0):
    """Every learned blob drawn by one recipe: weights N(0, 1 / fan_in) (so activations
    keep their scale through deep nets), biases N(0, 0.01), Scale factors 1 + N(0, 0.01),
    BatchNorm means N(0, 0.1), variances U(0.5, 1.5) and scale factor 1."""
    gen = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=gen)
    for layer in net._layers:
        blobs = layer.blobs
        if layer.type == "BatchNorm":
            blobs[0].data[...] = 0.1 * randn(blobs[0].shape)
            blobs[1].data[...] = 0.5 + torch.rand(blobs[1].shape, generator=gen)
            blobs[2].data[...] = 1
            continue
        for i, blob in enumerate(blobs):
            if layer.type == "Scale" and i == 0:
                blob.data[...] = 1 + 0.01 * randn(blob.shape)
            elif blob.num_axes >= 2:
                blob.data[...] = randn(blob.shape) * (blob.count() / blob.shape[0]) ** -0.5
            else:
                blob.data[...] = 0.01 * randn(blob.shape)


def random_inputs(net, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(net.blobs[name].shape, generator=gen).numpy()
            for name in net.inputs}


def assert_close(actual, expected, what, tol=TOL):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    # Caffe's own NaNs (an AVE window of size 0) must be reproduced, not compared.
    nan = np.isnan(expected)
    assert (np.isnan(actual) == nan).all(), f"{what}: NaN where Caffe has none, or not where it has"
    actual, expected = actual[~nan], expected[~nan]
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    err = np.abs(actual - expected).max(initial=0.0)
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol} x {scale:.3g}"


def caffe_forward(net, feeds, outputs):
    result = net.forward(blobs=list(outputs), **feeds) if feeds else \
        net.forward(blobs=list(outputs))
    return {name: np.array(result[name]) for name in outputs}


def run_onnx(net, feeds, outputs, opset=None, full_check=True):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = caffe.export.to_onnx(net, outputs=outputs, opset=opset)
    onnx.checker.check_model(model, full_check=full_check)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: np.asarray(feeds[n], np.float32) for n in names})
    return dict(zip([o.name for o in session.get_outputs()], got)), model


def run_torch(net, feeds, outputs):
    module = caffe.export.to_torch(net, outputs=outputs)
    with torch.no_grad():
        got = module(**{n: torch.as_tensor(feeds[n], dtype=net.dtype)
                        for n in module.input_names})
    got = got if isinstance(got, tuple) else (got,)
    return {name: t.numpy() for name, t in zip(outputs, got)}, module


def check_exports(net, feeds=None, outputs=None, tol=TOL, onnx=True, torch_=True):
    """Forward the net, export it both ways, and compare every output; returns Caffe's."""
    outputs = list(outputs or net.outputs)
    feeds = random_inputs(net) if feeds is None else feeds
    expected = caffe_forward(net, feeds, outputs)
    if onnx and HAVE_ONNX:
        got, _ = run_onnx(net, feeds, outputs)
        for name in outputs:
            assert_close(got[name], expected[name], f"ONNX output {name}", tol)
    if torch_:
        got, _ = run_torch(net, feeds, outputs)
        for name in outputs:
            assert_close(got[name], expected[name], f"torch output {name}", tol)
    return expected
