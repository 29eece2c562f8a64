"""Affine layers: numerical gradients, agreement with torch, Scale/Bias variants, bad input."""
import numpy as np
import pytest
import torch

import caffe
import caffe.layers.affine  # noqa: F401  (until "affine" joins caffe.layers._FAMILIES)
from caffe.blob import Blob
from caffe.errors import CaffeError, LayerSetupError
from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from caffe.testing import check_gradient, make_layer, random_blob

FILLERS = 'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "uniform" min: 1 max: 2 }'


def rand(shape, device, seed=0, low=-1.0, high=1.0):
    return random_blob(shape, low, high, device=device,
                       generator=torch.Generator().manual_seed(seed))


def run(layer, bottom):
    top = [Blob((), torch.float64, layer.device)]
    layer.layer_setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return top


# -- InnerProduct --------------------------------------------------------------------
@pytest.mark.parametrize("param", [
    "", "transpose: true", "bias_term: false", "axis: 2", "axis: -1 transpose: true",
    "axis: 0 bias_term: false transpose: true",
])
def test_inner_product(device, param):
    layer = make_layer(f'type: "InnerProduct" inner_product_param {{ num_output: 3 {param} '
                       f'{FILLERS} }}', device=device)
    bottom = [rand((2, 3, 2), device)]
    top = run(layer, bottom)
    p = layer.param.inner_product_param
    axis = p.axis % 3
    x = bottom[0].data.reshape(bottom[0].count(0, axis), -1)
    w = layer.blobs[0].data
    expected = torch.nn.functional.linear(x, w.t() if p.transpose else w,
                                          layer.blobs[1].data if p.bias_term else None)
    assert top[0].shape == bottom[0].shape[:axis] + (3,)
    torch.testing.assert_close(top[0].data.reshape(expected.shape), expected)
    check_gradient(layer, bottom)


def test_inner_product_accumulates_param_diffs():
    layer = make_layer(f'type: "InnerProduct" inner_product_param {{ num_output: 2 {FILLERS} }}')
    bottom = [rand((3, 4), "cpu")]
    top = run(layer, bottom)
    top[0].diff.copy_(torch.rand(3, 2, dtype=torch.float64))
    layer.backward(top, [False], bottom)
    once = [b.diff.clone() for b in layer.blobs]
    layer.backward(top, [False], bottom)
    for b, d in zip(layer.blobs, once):
        torch.testing.assert_close(b.diff, 2 * d)


def test_inner_product_input_size_change():
    layer = make_layer('name: "fc" type: "InnerProduct" inner_product_param { num_output: 2 }')
    bottom = [Blob((2, 3), torch.float64)]
    run(layer, bottom)
    bottom[0].reshape(2, 4)
    with pytest.raises(LayerSetupError, match="'fc'.*4 inputs.*take 3"):
        layer.reshape(bottom, [Blob()])


# -- Embed -----------------------------------------------------------------------------
@pytest.mark.parametrize("bias", ["true", "false"])
def test_embed(device, bias):
    layer = make_layer(f'type: "Embed" embed_param {{ num_output: 3 input_dim: 5 '
                       f'bias_term: {bias} {FILLERS} }}', device=device)
    index = [[4, 0, 2], [2, 2, 1]]
    bottom = [random_blob((2, 3), values=np.array(index, np.float64), device=device)]
    top = run(layer, bottom)
    expected = layer.blobs[0].data[torch.tensor(index)]
    if bias == "true":
        expected = expected + layer.blobs[1].data
    assert top[0].shape == (2, 3, 3)
    torch.testing.assert_close(top[0].data, expected)
    check_gradient(layer, bottom, check_bottom=[])


@pytest.mark.parametrize("value", [5, -1, 1.5])
def test_embed_bad_index(value):
    layer = make_layer('name: "emb" type: "Embed" embed_param { num_output: 2 input_dim: 5 }')
    bottom = [random_blob((2,), values=np.array([0.0, value]))]
    with pytest.raises(CaffeError, match=r"'emb'.*not an integer index in \[0, 5\)"):
        run(layer, bottom)


# -- Scale and Bias ----------------------------------------------------------------------
SCALE_LEARNED = [
    "",                                  # per channel
    "axis: 1 num_axes: 2",
    "axis: 0 num_axes: -1",              # element-wise
    "num_axes: 0",                       # one scalar
    "axis: -1",
    "bias_term: true",
    "axis: 2 num_axes: -1 bias_term: true",
]


@pytest.mark.parametrize("param", SCALE_LEARNED)
def test_scale_learned(device, param):
    layer = make_layer(f'type: "Scale" scale_param {{ {param} filler {{ type: "gaussian" }} '
                       f'bias_filler {{ type: "gaussian" }} }}', device=device)
    bottom = [rand((2, 3, 2), device)]
    top = run(layer, bottom)
    s = layer.blobs[0].data
    axis = 0 if s.dim() == 0 else layer.param.scale_param.axis % 3
    shape = (1,) * axis + s.shape + (1,) * (3 - axis - s.dim())
    expected = bottom[0].data * s.reshape(shape)
    if layer.param.scale_param.bias_term:
        expected = expected + layer.blobs[1].data.reshape(shape)
    torch.testing.assert_close(top[0].data, expected)
    check_gradient(layer, bottom)


@pytest.mark.parametrize("param,shape", [("axis: 0", (2, 3)), ("", (3,)), ("axis: 1", (3, 2)),
                                         ("axis: 2", ()), ("bias_term: true", (3,))])
def test_scale_two_bottoms(device, param, shape):
    layer = make_layer(f'type: "Scale" scale_param {{ {param} '
                       f'bias_filler {{ type: "gaussian" }} }}', device=device)
    check_gradient(layer, [rand((2, 3, 2), device), rand(shape, device, seed=1)])


def test_scale_default_filler_is_one():
    layer = make_layer('type: "Scale"')
    run(layer, [Blob((2, 3, 4))])
    assert layer.blobs[0].shape == (3,) and (layer.blobs[0].data == 1).all()


@pytest.mark.parametrize("param", ["", "axis: 0 num_axes: -1", "num_axes: 0",
                                   "axis: 1 num_axes: 2"])
def test_bias_learned(device, param):
    layer = make_layer(f'type: "Bias" bias_param {{ {param} filler {{ type: "gaussian" }} }}',
                       device=device)
    check_gradient(layer, [rand((2, 3, 2), device)])


@pytest.mark.parametrize("param,shape", [("axis: 0", (2, 3)), ("", (3, 2)), ("axis: 1", ())])
def test_bias_two_bottoms(device, param, shape):
    layer = make_layer(f'type: "Bias" bias_param {{ {param} }}', device=device)
    bottom = [rand((2, 3, 2), device), rand(shape, device, seed=1)]
    top = run(layer, bottom)
    axis = 0 if not shape else layer.param.bias_param.axis
    b = bottom[1].data.reshape((1,) * axis + shape + (1,) * (3 - axis - len(shape)))
    torch.testing.assert_close(top[0].data, bottom[0].data + b)
    check_gradient(layer, bottom)


@pytest.mark.parametrize("type_", ["Scale", "Bias"])
def test_operand_shape_mismatch(type_):
    layer = make_layer(f'name: "op" type: "{type_}"')
    with pytest.raises(LayerSetupError, match=r"'op'.*\(2,\) does not match.*\(2, 3, 4\)"):
        run(layer, [Blob((2, 3, 4)), Blob((2,))])


def test_learned_scale_extends_past_bottom():
    layer = make_layer('name: "sc" type: "Scale" scale_param { axis: 2 num_axes: 2 }')
    with pytest.raises(LayerSetupError, match="'sc'.*extends past"):
        run(layer, [Blob((2, 3, 4))])


# -- in place, in a Net ------------------------------------------------------------------
NET = """
force_backward: true
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 3 dim: 4 }} }} }}
layer {{ name: "p" type: "Power" bottom: "x" top: "p" power_param {{ scale: 2 shift: 0.5 }} }}
layer {{ name: "s" type: "{kind}" bottom: "p" top: "{top}"
         {kind_lower}_param {{ filler {{ type: "gaussian" }} {extra} }} }}
layer {{ name: "loss" type: "Reduction" bottom: "{top}" top: "loss" loss_weight: 1
         reduction_param {{ operation: SUMSQ }} }}
"""


@pytest.mark.parametrize("kind,extra", [("Scale", ""), ("Scale", 'bias_term: true '
                                        'bias_filler { type: "gaussian" }'), ("Bias", "")])
def test_in_place_in_a_net(device, kind, extra):
    results = []
    for top in ("s", "p"):
        text = NET.format(kind=kind, kind_lower=kind.lower(), top=top, extra=extra)
        caffe.set_random_seed(5)
        net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TRAIN,
                        dtype=torch.float64, device=device)
        net.blobs["x"].data[...] = np.linspace(-1, 1, 24).reshape(2, 3, 4)
        net.forward()
        net.backward()
        results.append([net.blobs["loss"].data.copy(), net.blobs["x"].diff.copy()]
                       + [b.diff.copy() for b in net.params["s"]])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12)
