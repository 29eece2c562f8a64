"""The golden-case runner shared by BVLC's cases (../shared/golden/layers) and the forks'
(tests/golden_forks): load the case's net and weights, set its inputs, compare every top,
then (TRAIN) every bottom and parameter gradient with the recorded ones."""
from pathlib import Path

import numpy as np

import caffe
import caffe.layers  # noqa: F401  (registers the built-in types run_case looks up)
from caffe.formats import read_net_param
from caffe.layer import LAYER_REGISTRY


def assert_close(actual, expected, tol, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.size == expected.size, f"{what}: shape {actual.shape} vs golden {expected.shape}"
    actual = actual.reshape(expected.shape)
    scale = max(np.abs(expected).max(initial=0.0), 1e-12)
    err = np.abs(actual - expected).max(initial=0.0)
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol} x {scale:.3g}"


def golden_inputs(net, golden):
    """Set the case's Parameter-fed inputs (their learned blob); return the others
    {blob name: value}."""
    inputs = {}
    for key in golden.files:
        if key.startswith("in/"):
            name = key[3:]
            if f"in_{name}" in net.params and net.layer_dict[f"in_{name}"].type == "Parameter":
                net.params[f"in_{name}"][0].data[...] = golden[key]
            else:
                inputs[name] = golden[key]
    return inputs


def run_case(folder, device="cpu", case=None):
    """Run the golden case in `folder` (net.prototxt, weights.caffemodel, phase, golden.npz:
    in/ out/ topdiff/ indiff/ param/ paramdiff/): forward within 1e-4, gradients 1e-3."""
    folder = Path(folder)
    case = case or folder.name
    param = read_net_param(folder / "net.prototxt")
    layer_type = next(lp.type for lp in param.layer if lp.name == "layer")
    assert layer_type in LAYER_REGISTRY, f"layer type {layer_type} is not registered"
    phase = caffe.TRAIN if (folder / "phase").read_text().strip() == "TRAIN" else caffe.TEST
    golden = np.load(folder / "golden.npz")
    net = caffe.Net(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"), phase,
                    device=device)
    for name, value in golden_inputs(net, golden).items():
        net.blobs[name].data[...] = value
    layer = net.layer_dict["layer"]
    use_global = net._layers[net.layer_index["layer"]].param.batch_norm_param.use_global_stats
    if layer.type == "BatchNorm" and phase == caffe.TRAIN and not use_global:
        # The case's weights file holds the running statistics *after* the reference's
        # forward pass; the recorded run started them from zero, as a fresh net does.
        for blob in layer.blobs:
            blob.data[...] = 0
    net.forward()
    tops = net.top_names["layer"]
    for i, top in enumerate(tops):
        assert_close(net.blobs[top].data, golden[f"out/t{i}"], 1e-4, f"{case}: top t{i}")
    if phase == caffe.TEST:
        return
    for i, top in enumerate(tops):
        if f"topdiff/t{i}" in golden:
            net.blobs[top].diff[...] = golden[f"topdiff/t{i}"]
    for blobs in net.params.values():
        for b in blobs:
            b.diff[...] = 0
    net._backward(len(net.layers) - 1, 0)
    for key in golden.files:
        if key.startswith("indiff/"):
            name = key[7:]
            if f"in_{name}" in net.params and net.layer_dict[f"in_{name}"].type == "Parameter":
                actual = net.params[f"in_{name}"][0].diff
            else:
                actual = net.blobs[name].diff
            assert_close(actual, golden[key], 1e-3, f"{case}: bottom diff of {name}")
        elif key.startswith("param/"):
            assert_close(layer.blobs[int(key[6:])].data, golden[key], 1e-4, f"{case}: {key}")
        elif key.startswith("paramdiff/"):
            assert_close(layer.blobs[int(key[10:])].diff, golden[key], 1e-3, f"{case}: {key}")
