"""Every case BVLC Caffe trained in ../shared/golden/solvers, reproduced through pycaffe's API.

Recipe (../shared/README.md): load the solver, copy init.caffemodel, then for each step i set
data[i] / label[i] and step(1). Losses and final weights must match within 1e-3 of the
largest magnitude; the reference's own snapshot must restore to our history and weights.
"""
import numpy as np
import pytest

import caffe
from caffe.layer import LAYER_REGISTRY
from tests.conftest import SHARED, shared_path

GOLDEN = SHARED / "golden" / "solvers"
CASES = sorted(p.name for p in GOLDEN.iterdir()) if GOLDEN.is_dir() else ["(absent)"]
NEEDED = ("Input", "Convolution", "Pooling", "ReLU", "InnerProduct", "SoftmaxWithLoss")
TOL = 1e-3


def assert_close(actual, expected, what, tol=TOL):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    scale = max(np.abs(expected).max(initial=0.0), 1e-12)
    err = np.abs(actual - expected).max(initial=0.0)
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol} x {scale:.3g}"


def trained(case, monkeypatch, device):
    missing = [t for t in NEEDED if t not in LAYER_REGISTRY]
    if missing:
        pytest.fail(f"layers not registered: {missing}")
    folder = shared_path("golden", "solvers", case)
    monkeypatch.chdir(folder)  # Caffe resolves net: "net.prototxt" against the cwd
    solver = caffe.get_solver("solver.prototxt", device=device)
    solver.net.copy_from("init.caffemodel")
    data = np.load("data.npz")
    losses = []
    for i in range(len(data["data"])):
        solver.net.blobs["data"].data[...] = data["data"][i]
        solver.net.blobs["label"].data[...] = data["label"][i]
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    return solver, data, losses


def state_file(case):
    return "snap_iter_12.solverstate.h5" if case == "adam" else "snap_iter_12.solverstate"


@pytest.mark.parametrize("case", CASES)
def test_golden_solver(case, monkeypatch, device):
    solver, data, losses = trained(case, monkeypatch, device)
    golden = np.load("golden.npz")
    for i, (ours, theirs) in enumerate(zip(losses, golden["loss"])):
        assert abs(ours - theirs) <= TOL * max(abs(theirs), 1e-12), \
            f"{case}: loss after step {i}: {ours} vs golden {theirs}"
    for key in golden.files:
        if key.startswith("param/"):
            _, layer, index = key.split("/")
            assert_close(solver.net.params[layer][int(index)].data, golden[key], f"{case} {key}")

    # The reference's snapshot restores to the same weights and history as ours.
    resumed = caffe.get_solver("solver.prototxt", device=device)
    resumed.restore(state_file(case))
    assert resumed.iter == solver.iter == 12
    assert resumed.current_step == solver.current_step
    assert len(resumed.history) == len(solver.history)
    for i, (a, b) in enumerate(zip(resumed.history, solver.history)):
        assert_close(a.data.cpu().numpy(), b.data.cpu().numpy(), f"{case}: history {i}")
    for layer, blobs in solver.net.params.items():
        for i, blob in enumerate(blobs):
            assert_close(resumed.net.params[layer][i].data, blob.data, f"{case}: {layer}/{i}")

    # ... and both continue alike (learning-rate schedule and history included).
    for s in (solver, resumed):
        s.net.blobs["data"].data[...] = data["data"][0]
        s.net.blobs["label"].data[...] = data["label"][0]
        s.step(1)
    for layer, blobs in solver.net.params.items():
        for i, blob in enumerate(blobs):
            assert_close(resumed.net.params[layer][i].data, blob.data,
                         f"{case}: {layer}/{i} one step after resuming")
