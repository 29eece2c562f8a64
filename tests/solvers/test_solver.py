"""Update rules, the iteration loop and bad input, on tiny nets.

The update rules are checked against a NumPy transcription of Caffe's formulas, with the
gradients fixed by an on_gradients_ready callback so that only the solver is under test.
"""
import logging
import math

import numpy as np
import pytest
import torch

import caffe
from caffe.errors import CaffeError
from caffe.solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,
                           RMSPropSolver, SGDSolver, SolverError, get_solver)
from tests.solvers.nets import CLASSIFIER_NET, PARAM_NET, make_solver, solver_param

LR_MULT, DECAY_MULT = [1.0, 2.0], [1.0, 0.5]


# -- update rules against NumPy ----------------------------------------------------------
def reference(kind, p, weights, grads):
    """Caffe's ApplyUpdate in NumPy: weights after each step, given each step's gradients."""
    n = len(weights)
    w = [x.copy() for x in weights]
    h = [np.zeros_like(x) for x in w]
    h2 = [np.zeros_like(x) for x in w]
    out = []
    for it, g in enumerate(grads):
        g = [x.copy() for x in g]
        rate = p["lr"](it)
        norm = math.sqrt(sum((x ** 2).sum() for x in g))
        if p.get("clip", -1) >= 0 and norm > p["clip"]:
            g = [x * p["clip"] / norm for x in g]
        for i in range(n):
            decay = p.get("decay", 0) * DECAY_MULT[i]
            reg = np.sign(w[i]) if p.get("l1") else w[i]
            g[i] = g[i] + decay * reg
            lr, mom, delta = rate * LR_MULT[i], p.get("momentum", 0), p.get("delta", 1e-8)
            if kind == "SGD":
                h[i] = mom * h[i] + lr * g[i]
                step = h[i]
            elif kind == "Nesterov":
                old = h[i]
                h[i] = mom * h[i] + lr * g[i]
                step = (1 + mom) * h[i] - mom * old
            elif kind == "AdaGrad":
                h[i] = h[i] + g[i] ** 2
                step = lr * g[i] / (np.sqrt(h[i]) + delta)
            elif kind == "RMSProp":
                d = p["rms_decay"]
                h[i] = d * h[i] + (1 - d) * g[i] ** 2
                step = lr * g[i] / (np.sqrt(h[i]) + delta)
            elif kind == "AdaDelta":
                h[i] = mom * h[i] + (1 - mom) * g[i] ** 2
                s = g[i] * np.sqrt((h2[i] + delta) / (h[i] + delta))
                h2[i] = mom * h2[i] + (1 - mom) * s ** 2
                step = lr * s
            elif kind == "Adam":
                b1, b2, t = mom, p["momentum2"], it + 1
                h[i] = b1 * h[i] + (1 - b1) * g[i]
                h2[i] = b2 * h2[i] + (1 - b2) * g[i] ** 2
                step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * h[i] / \
                    (np.sqrt(h2[i]) + delta)
            w[i] = w[i] - step
        out.append([x.copy() for x in w])
    return out, h + (h2 if kind in ("AdaDelta", "Adam") else [])


def f32(x):
    return float(np.float32(x))


RULES = [
    ("SGD", 'momentum: 0.9 weight_decay: 0.01', dict(momentum=0.9, decay=0.01)),
    ("SGD", 'momentum: 0.5 weight_decay: 0.02 regularization_type: "L1"',
     dict(momentum=0.5, decay=0.02, l1=True)),
    ("SGD", 'momentum: 0.9 clip_gradients: 0.5', dict(momentum=0.9, clip=0.5)),
    ("Nesterov", 'momentum: 0.9 weight_decay: 0.005', dict(momentum=0.9, decay=0.005)),
    ("AdaGrad", 'weight_decay: 0.005 delta: 1e-6', dict(decay=0.005, delta=1e-6)),
    ("RMSProp", 'rms_decay: 0.95 weight_decay: 0.005', dict(rms_decay=0.95, decay=0.005)),
    ("AdaDelta", 'momentum: 0.95 delta: 1e-6', dict(momentum=0.95, delta=1e-6)),
    ("Adam", 'momentum: 0.9 momentum2: 0.999', dict(momentum=0.9, momentum2=0.999)),
]


@pytest.mark.parametrize("kind,text,p", RULES, ids=[f"{r[0]}-{i}" for i, r in enumerate(RULES)])
def test_update_rule_matches_reference(kind, text, p):
    rng = np.random.default_rng(0)
    solver = make_solver(f'type: "{kind}" base_lr: 0.1 lr_policy: "step" gamma: 0.5 '
                         f'stepsize: 3 {text}')
    p = {k: f32(v) if isinstance(v, float) else v for k, v in p.items()}
    p["lr"] = lambda it: f32(0.1) * f32(0.5) ** (it // 3)
    params = solver.net.params
    weights = [rng.normal(size=params["w1"][0].shape), rng.normal(size=params["w2"][0].shape)]
    for blob, w in zip((params["w1"][0], params["w2"][0]), weights):
        blob.data[...] = w
    grads = [[rng.normal(size=w.shape) for w in weights] for _ in range(7)]

    def set_gradients():
        for blob, g in zip((params["w1"][0], params["w2"][0]), grads[solver.iter]):
            blob.diff[...] = g
    solver.add_callback(lambda: None, set_gradients)
    expected, history = reference(kind, p, weights, grads)
    for it in range(7):
        solver.step(1)
        np.testing.assert_allclose(params["w1"][0].data, expected[it][0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(params["w2"][0].data, expected[it][1], rtol=1e-9, atol=1e-12)
    assert len(solver.history) == len(history)
    for blob, h in zip(solver.history, history):
        np.testing.assert_allclose(blob.data.numpy(), h, rtol=1e-9, atol=1e-12)


def test_solver_classes_and_registry():
    text = 'base_lr: 0.1 lr_policy: "fixed"'
    for cls, name in ((SGDSolver, "SGD"), (NesterovSolver, "Nesterov"),
                      (AdaGradSolver, "AdaGrad"), (RMSPropSolver, "RMSProp"),
                      (AdaDeltaSolver, "AdaDelta"), (AdamSolver, "Adam")):
        assert type(make_solver(f'type: "{name}" {text}')) is cls
        # pycaffe's classes build their own type whatever the file says
        assert type(cls(solver_param(text), dtype=torch.float64)) is cls


def test_iter_size_accumulates_and_normalizes():
    """iter_size 2 on the same batch gives the same update as iter_size 1."""
    results = []
    for iter_size in (1, 2):
        solver = make_solver(f'base_lr: 0.5 lr_policy: "fixed" momentum: 0.9 '
                             f'iter_size: {iter_size}')
        solver.net.params["w1"][0].data[...] = 1.0
        solver.net.blobs["t"].data[...] = np.arange(12).reshape(3, 4) / 12
        solver.step(3)
        results.append(solver.net.params["w1"][0].data.copy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12)
    # Euclidean loss pulls w1 towards t: gradient (w1 - t) / 3
    assert not np.allclose(results[0], 1.0)


def test_real_gradient_step_with_float32():
    solver = make_solver('base_lr: 0.3 lr_policy: "fixed"', dtype=torch.float32)
    w1 = solver.net.params["w1"][0]
    w1.data[...] = 1.0
    solver.step(1)
    np.testing.assert_allclose(w1.data, 1.0 - 0.3 * 1.0 / 3, rtol=1e-6)
    assert w1.data.dtype == np.float32


# -- the loop: smoothing, display, tests, callbacks, actions --------------------------------
def test_average_loss_and_display_log(caplog):
    solver = make_solver('base_lr: 0.1 lr_policy: "fixed" display: 2 average_loss: 3')
    solver.net.params["w1"][0].data[...] = 1.0
    losses = []
    solver.add_callback(lambda: None, lambda: losses.append(float(solver.net.blobs["loss"].data)))
    with caplog.at_level(logging.INFO, logger="caffe"):
        solver.step(5)
    lines = [r.getMessage() for r in caplog.records]
    displayed = [l for l in lines if l.startswith("Iteration 4 (")]
    assert displayed and displayed[0].endswith(f"loss = {np.mean(losses[2:5]):.6g}")
    assert "    Train net output #0: loss = %.6g (* 1 = %.6g loss)" % (losses[4], losses[4]) \
        in lines
    assert "Iteration 4, lr = 0.1" in lines
    assert not any(l.startswith("Iteration 3") for l in lines)


def classifier_solver(extra="", **kwargs):
    solver = make_solver(f'base_lr: 0.5 lr_policy: "fixed" momentum: 0.5 {extra}',
                         net=CLASSIFIER_NET, **kwargs)
    rng = np.random.default_rng(1)
    labels = np.array([0, 1, 2, 0, 1, 2])
    data = np.eye(3, 4)[labels] * 3 + rng.normal(scale=0.1, size=(6, 4))
    for net in [solver.net] + solver.test_nets:
        net.blobs["data"].data[...] = data
        net.blobs["label"].data[...] = labels
    return solver


@pytest.fixture
def needs_classifier_layers():
    missing = {"InnerProduct", "SoftmaxWithLoss", "Accuracy"} - set(caffe.layer_type_list())
    if missing:
        pytest.fail(f"layers not registered: {sorted(missing)}")


def test_test_nets_interval_and_scores(caplog, needs_classifier_layers):
    solver = classifier_solver("test_iter: 2 test_interval: 4 test_compute_loss: true")
    assert len(solver.test_nets) == 1 and solver.test_nets[0].phase == caffe.TEST
    with caplog.at_level(logging.INFO, logger="caffe"):
        solver.step(9)
    lines = [r.getMessage() for r in caplog.records]
    assert [l for l in lines if "Testing net" in l] == [
        "Iteration 0, Testing net (#0)", "Iteration 4, Testing net (#0)",
        "Iteration 8, Testing net (#0)"]
    assert any(l.startswith("Test loss: ") for l in lines)
    scores = dict(solver.test(0))
    assert scores["accuracy"] == 1.0 and scores["loss"] < 0.5
    assert "    Test net output #0: accuracy = 1" in lines


def test_test_initialization_false(caplog, needs_classifier_layers):
    solver = classifier_solver("test_iter: 1 test_interval: 2 test_initialization: false")
    with caplog.at_level(logging.INFO, logger="caffe"):
        solver.step(3)
    tests = [r.getMessage() for r in caplog.records if "Testing net" in r.getMessage()]
    assert tests == ["Iteration 2, Testing net (#0)"]


def test_separate_test_net_and_states(needs_classifier_layers):
    param = solver_param('base_lr: 0.1 lr_policy: "fixed" test_iter: 1 test_iter: 1 '
                         'test_interval: 10 test_state { stage: "a" } test_state { level: 2 }',
                         net=CLASSIFIER_NET)
    solver = get_solver(param, dtype=torch.float64)
    assert [list(n.param.state.stage) for n in solver.test_nets] == [["a"], []]
    assert solver.test_nets[1].param.state.level == 2


def test_callbacks_order_and_apply_update():
    solver = make_solver('base_lr: 1 lr_policy: "fixed"')
    events = []
    solver.add_callback(lambda: events.append(("start", solver.iter)),
                        lambda: events.append(("ready", solver.iter)))
    solver.step(2)
    assert events == [("start", 0), ("ready", 0), ("start", 1), ("ready", 1)]
    w1 = solver.net.params["w1"][0]
    w1.diff[...] = 2.0
    before = w1.data.copy()
    solver.apply_update()
    np.testing.assert_allclose(w1.data, before - 2.0)
    assert solver.param.base_lr == 1


def test_action_stop_and_snapshot(tmp_path):
    prefix = tmp_path / "act"
    solver = make_solver(f'base_lr: 0.1 lr_policy: "fixed" max_iter: 10 '
                         f'snapshot_prefix: "{prefix}"')
    requests = iter(["none", "snapshot", "none", "stop"])
    solver.set_action_function(lambda: next(requests, "none"))
    solver.solve()
    assert solver.iter == 4
    assert (tmp_path / "act_iter_2.caffemodel").exists()
    # stopped early: snapshot_after_train still saves the last state, as Caffe
    assert (tmp_path / "act_iter_4.solverstate").exists()


def test_debug_info_logs(caplog):
    solver = make_solver('base_lr: 0.1 lr_policy: "fixed" display: 1 debug_info: true')
    with caplog.at_level(logging.INFO, logger="caffe"):
        solver.step(1)
    lines = [r.getMessage() for r in caplog.records]
    assert any(l.startswith("    [Forward] Layer w1, top blob w1 data:") for l in lines)
    assert any(l.startswith("    [Backward] Layer loss, bottom blob w1 diff:") for l in lines)
    assert any(l.startswith("    [Update] Layer w1, param 0 data:") for l in lines)


def test_random_seed_makes_fillers_repeat(needs_classifier_layers):
    a = make_solver('base_lr: 0.1 lr_policy: "fixed" random_seed: 5', net=CLASSIFIER_NET)
    caffe.set_random_seed(99)
    b = make_solver('base_lr: 0.1 lr_policy: "fixed" random_seed: 5', net=CLASSIFIER_NET)
    np.testing.assert_array_equal(a.net.params["ip"][0].data, b.net.params["ip"][0].data)


# -- bad input ------------------------------------------------------------------------------
def test_solver_without_net():
    with pytest.raises(SolverError, match="must specify a train net"):
        make_solver('base_lr: 0.1 lr_policy: "fixed"', net=None)


def test_unknown_solver_type_lists_known():
    with pytest.raises(SolverError, match=r"unknown solver type 'adam'.*AdaDelta, AdaGrad, "
                                          r"Adam.*did you mean 'Adam'"):
        make_solver('type: "adam" base_lr: 0.1 lr_policy: "fixed"')


@pytest.mark.parametrize("text,match", [
    ('lr_policy: "step"', "stepsize > 0"),
    ('lr_policy: "fixed" regularization_type: "L3"', "regularization type 'L3'"),
    ('type: "AdaGrad" lr_policy: "fixed" momentum: 0.9', "momentum cannot be used"),
    ('type: "RMSProp" lr_policy: "fixed" rms_decay: 1.5', "rms_decay"),
    ('lr_policy: "fixed" iter_size: 0', "iter_size"),
])
def test_bad_settings(text, match):
    with pytest.raises(SolverError, match=match):
        make_solver(f"base_lr: 0.1 {text}")


def test_nan_loss_stops_with_iteration():
    solver = make_solver('base_lr: 0.1 lr_policy: "fixed"')
    solver.step(2)
    solver.net.blobs["t"].data[0, 0] = np.nan
    with pytest.raises(SolverError, match="Iteration 2: the loss is nan"):
        solver.step(3)
    assert solver.iter == 2


def test_missing_snapshot_directory(tmp_path):
    prefix = tmp_path / "nowhere" / "snap"
    with pytest.raises(SolverError, match="does not exist"):
        make_solver(f'base_lr: 0.1 lr_policy: "fixed" snapshot: 5 snapshot_prefix: "{prefix}"')
    # without periodic snapshots it fails when solve() starts, before any iteration
    solver = make_solver(f'base_lr: 0.1 lr_policy: "fixed" max_iter: 3 '
                         f'snapshot_prefix: "{prefix}"')
    with pytest.raises(SolverError, match="does not exist"):
        solver.solve()
    assert solver.iter == 0


def test_missing_net_file_names_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "solver.prototxt").write_text('net: "absent.prototxt" base_lr: 0.1 '
                                              'lr_policy: "fixed"')
    with pytest.raises(SolverError, match=r"absent.prototxt' not found.*current directory"):
        caffe.solvers.get_solver("solver.prototxt")


def test_net_file_relative_to_cwd_and_prefix_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(PARAM_NET)
    (tmp_path / "my_solver.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 '
                                                 'lr_policy: "fixed"')
    solver = caffe.solvers.get_solver("my_solver.prototxt")
    assert solver.net.name == "params" and solver.net.phase == caffe.TRAIN
    assert solver.param.snapshot_prefix == "my_solver"   # Caffe's default: the file's name


def test_weights_of_another_net_reach_the_user(tmp_path, needs_classifier_layers):
    other = make_solver('base_lr: 0.1 lr_policy: "fixed"', net=CLASSIFIER_NET.replace(
        "num_output: 3", "num_output: 5"))
    path = tmp_path / "other.caffemodel"
    other.net.save(str(path))
    param = solver_param(f'base_lr: 0.1 lr_policy: "fixed" weights: "{path}"',
                         net=CLASSIFIER_NET)
    with pytest.raises(CaffeError, match=r"other.caffemodel.*layer 'ip'.*shape"):
        get_solver(param)
