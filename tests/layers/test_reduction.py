"""Eltwise, Filter, BatchReindex, ArgMax, Reduction: gradients, Caffe's tie rules, bad input."""
import numpy as np
import pytest
import torch

from caffe.blob import Blob
from caffe.errors import CaffeError, LayerSetupError
from caffe.testing import check_gradient, make_layer
from tests.layers.test_common_layers import NET, np_of, rand, run, run_net, setup, values


ELTWISE = [
    "operation: PROD",
    "operation: PROD stable_prod_grad: false",
    "operation: SUM",
    "operation: SUM coeff: 0.5 coeff: -2 coeff: 1.5",
    "operation: MAX",
]


@pytest.mark.parametrize("param", ELTWISE)
def test_eltwise_gradient(device, param):
    layer = make_layer(f'type: "Eltwise" eltwise_param {{ {param} }}', device=device)
    # Away from zero (the unstable PROD gradient divides) and with no near-ties (MAX).
    bottom = [rand((2, 3, 2), device, seed=i, low=0.5, high=1.5) for i in range(3)]
    check_gradient(layer, bottom)


def test_eltwise_forward(device):
    xs = [rand((2, 5), device, seed=i) for i in range(3)]
    a, b, c = (np_of(x) for x in xs)
    for param, expected in [("operation: PROD", a * b * c),
                            ("coeff: 2 coeff: -1 coeff: 0.5", 2 * a - b + 0.5 * c),
                            ("operation: MAX", np.maximum(np.maximum(a, b), c))]:
        layer = make_layer(f'type: "Eltwise" eltwise_param {{ {param} }}', device=device)
        np.testing.assert_allclose(np_of(run(layer, xs)[0]), expected, rtol=1e-12)


def test_eltwise_max_ties_follow_caffe(device):
    # Caffe compares bottoms 0 and 1 with '>' (a tie goes to 1), later bottoms with '>'
    # against the running max (a tie stays with the earlier winner).
    a = values([1.0, 2.0, 0.0, 5.0], device)
    b = values([1.0, 1.0, 3.0, 5.0], device)
    c = values([0.0, 2.0, 3.0, 5.0], device)
    layer = make_layer('type: "Eltwise" eltwise_param { operation: MAX }', device=device)
    top = run(layer, [a, b, c])
    top[0].diff.copy_(torch.tensor([10.0, 20.0, 30.0, 40.0], dtype=torch.float64))
    layer.backward(top, [True] * 3, [a, b, c])
    np.testing.assert_array_equal(a.diff.cpu().numpy(), [0, 20, 0, 0])
    np.testing.assert_array_equal(b.diff.cpu().numpy(), [10, 0, 30, 40])
    np.testing.assert_array_equal(c.diff.cpu().numpy(), [0, 0, 0, 0])


@pytest.mark.parametrize("param,message", [
    ("coeff: 1 coeff: 2 coeff: 3", "one coefficient per bottom"),
    ("coeff: 1", "one coefficient per bottom"),
    ("operation: PROD coeff: 1 coeff: 2", "only operation SUM"),
])
def test_eltwise_bad_coefficients(param, message):
    layer = make_layer(f'name: "sum" type: "Eltwise" eltwise_param {{ {param} }}')
    with pytest.raises(LayerSetupError, match=f"'sum'.*{message}"):
        setup(layer, [Blob((2, 3)), Blob((2, 3))])


def test_eltwise_shape_mismatch():
    layer = make_layer('name: "e" type: "Eltwise"')
    with pytest.raises(LayerSetupError, match=r"'e'.*\(2, 3\).*\(3, 2\)"):
        setup(layer, [Blob((2, 3)), Blob((3, 2))])


# -- Flatten and Reshape ---------------------------------------------------------------
def test_filter(device):
    layer = make_layer('type: "Filter"', device=device)
    bottom = [rand((4, 2, 3), device), rand((4, 3), device, seed=1), values([0, 1, 0, 1], device)]
    top = run(layer, bottom, num_tops=2)
    np.testing.assert_array_equal(np_of(top[0]), np_of(bottom[0])[[1, 3]])
    np.testing.assert_array_equal(np_of(top[1]), np_of(bottom[1])[[1, 3]])
    check_gradient(layer, bottom, num_tops=2, check_bottom=[0, 1])
    for t in top:
        t.diff.fill_(1)
    layer.backward(top, [True, True, False], bottom)
    assert (bottom[0].diff[[0, 2]] == 0).all() and (bottom[0].diff[[1, 3]] == 1).all()


def test_filter_first_reshape_keeps_every_item():
    layer = make_layer('type: "Filter"')
    top = setup(layer, [Blob((3, 2)), Blob((3,))])   # selector all zero at set-up
    assert top[0].shape == (3, 2)


def test_batch_reindex(device):
    layer = make_layer('type: "BatchReindex"', device=device)
    bottom = [rand((3, 2, 2), device), values([2, 0, 2, 1, 2], device)]
    top = run(layer, bottom)
    np.testing.assert_array_equal(np_of(top[0]), np_of(bottom[0])[[2, 0, 2, 1, 2]])
    check_gradient(layer, bottom, check_bottom=[0])
    top[0].diff.fill_(1)
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff[:, 0, 0].cpu().numpy(), [1, 1, 3])


@pytest.mark.parametrize("index", [3, -1])
def test_batch_reindex_index_out_of_range(index):
    layer = make_layer('name: "ri" type: "BatchReindex"')
    with pytest.raises(CaffeError, match=r"'ri'.*outside \[0, 3\)"):
        run(layer, [Blob((3, 2)), values([0, index], "cpu")])


def test_argmax_per_item(device):
    x = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, -1.0, 2.0, 1.0]])
    layer = make_layer('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }',
                       device=device)
    top = run(layer, [values(x, device)])
    assert top[0].shape == (2, 2, 2)
    # Equal values rank the larger index first (Caffe sorts (value, index) pairs).
    np.testing.assert_array_equal(np_of(top[0]), [[[3, 1], [0.9, 0.9]], [[0, 2], [3, 2]]])
    layer = make_layer('type: "ArgMax"', device=device)
    top = run(layer, [values(x.reshape(2, 2, 2, 1), device)])
    assert top[0].shape == (2, 1, 1, 1)
    np.testing.assert_array_equal(np_of(top[0]).ravel(), [3, 0])


@pytest.mark.parametrize("param", ["axis: 1", "axis: 1 top_k: 2", "axis: -1 out_max_val: true",
                                   "axis: 0 top_k: 2 out_max_val: true"])
def test_argmax_axis(device, param):
    layer = make_layer(f'type: "ArgMax" argmax_param {{ {param} }}', device=device)
    bottom = [rand((2, 3, 4), device)]
    p = layer.param.argmax_param
    top = run(layer, bottom)
    x = np_of(bottom[0])
    order = np.flip(np.argsort(x, axis=p.axis, kind="stable"), p.axis)
    order = np.take(order, range(p.top_k), axis=p.axis)
    expected = np.take_along_axis(x, order, p.axis) if p.out_max_val else order
    np.testing.assert_array_equal(np_of(top[0]), expected)


def test_argmax_top_k_too_large():
    with pytest.raises(LayerSetupError, match="top_k"):
        setup(make_layer('type: "ArgMax" argmax_param { top_k: 5 }'), [Blob((2, 4))])


# -- Reduction ------------------------------------------------------------------------
REDUCE = {"SUM": lambda x, ax: x.sum(ax), "ASUM": lambda x, ax: np.abs(x).sum(ax),
          "SUMSQ": lambda x, ax: (x * x).sum(ax), "MEAN": lambda x, ax: x.mean(ax)}


@pytest.mark.parametrize("op", list(REDUCE))
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, 0.5), (-1, -2.0)])
def test_reduction(device, op, axis, coeff):
    layer = make_layer(f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} '
                       f'coeff: {coeff} }}', device=device)
    bottom = [rand((2, 3, 2), device)]
    top = run(layer, bottom)
    a = axis % 3
    expected = coeff * REDUCE[op](np_of(bottom[0]), tuple(range(a, 3)))
    assert top[0].shape == bottom[0].shape[:a]
    np.testing.assert_allclose(np_of(top[0]), expected, rtol=1e-12)
    check_gradient(layer, bottom, kink_range=1e-3 if op == "ASUM" else -1)


# -- in a Net --------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["operation: SUM coeff: 1 coeff: -3", "operation: PROD",
                                "operation: PROD stable_prod_grad: false", "operation: MAX"])
def test_eltwise_in_place_in_a_net(device, op):
    apart, inplace = (run_net(NET.format(e=e, op=op), device) for e in ("e", "p"))
    for name in apart:
        for a, b in zip(apart[name], inplace[name]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)

