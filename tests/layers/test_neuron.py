"""Neuron layers: numerical gradients, in-place use, Dropout statistics, bad parameters."""
import math

import pytest
import torch

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2
from caffe.testing import check_gradient, make_layer, random_blob

SHAPE = (2, 3, 3, 2)


def away_from(values, kinks, gap=0.02):
    """Move values lying within `gap` of a kink (where the derivative jumps) off it."""
    for k in kinks:
        values = torch.where((values - k).abs() < gap, values + 2 * gap, values)
    return values


def blob_with(values, device):
    return random_blob(tuple(values.shape), values=values.numpy(), device=device)


# (layer text, input range): every main variant, inputs kept inside each function's domain.
SMOOTH = [
    ('type: "BNLL"', (-3, 3)),
    ('type: "ELU"', (-2, 2)),
    ('type: "ELU" elu_param { alpha: 0.5 }', (-2, 2)),
    ('type: "Exp"', (-1, 1)),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', (-1, 1)),
    ('type: "Log"', (0.5, 2)),
    ('type: "Log" log_param { base: 3 scale: 2 shift: 0.5 }', (0, 2)),
    ('type: "Power"', (-1, 1)),
    ('type: "Power" power_param { power: 2 scale: 0.7 shift: -0.2 }', (-1, 1)),
    ('type: "Power" power_param { power: 1.7 scale: 0.8 shift: 0.3 }', (0, 2)),
    ('type: "Power" power_param { power: -1.5 scale: 2 }', (0.5, 2)),
    ('type: "Power" power_param { power: 0 scale: 2 shift: 3 }', (-1, 1)),
    ('type: "Power" power_param { power: 3 scale: 0 shift: 2 }', (-1, 1)),
    ('type: "Sigmoid"', (-3, 3)),
    ('type: "Swish"', (-3, 3)),
    ('type: "Swish" swish_param { beta: 1.5 }', (-3, 3)),
    ('type: "TanH"', (-2, 2)),
    ('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', (-1, 1)),
    ('type: "Dropout" dropout_param { dropout_ratio: 0.3 } phase: TEST', (-1, 1)),
]


@pytest.mark.parametrize("text,bounds", SMOOTH, ids=[t for t, _ in SMOOTH])
def test_smooth_gradient(device, text, bounds):
    layer = make_layer(text, device=device)
    check_gradient(layer, [random_blob(SHAPE, *bounds, device=device)])


KINKED = [
    ('type: "AbsVal"', [0.0]),
    ('type: "ReLU"', [0.0]),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', [0.0]),
    ('type: "ReLU" relu_param { negative_slope: -0.3 }', [0.0]),
    ('type: "Clip" clip_param { min: -0.5 max: 0.7 }', [-0.5, 0.7]),
    ('type: "PReLU"', [0.0]),
    ('type: "PReLU" prelu_param { filler { type: "gaussian" std: 0.3 } }', [0.0]),
    ('type: "PReLU" prelu_param { channel_shared: true }', [0.0]),
]


@pytest.mark.parametrize("text,kinks", KINKED, ids=[t for t, _ in KINKED])
def test_kinked_gradient(device, text, kinks):
    values = away_from(torch.rand(SHAPE, generator=torch.Generator().manual_seed(3),
                                  dtype=torch.float64) * 2 - 1, kinks)
    layer = make_layer(text, device=device)
    check_gradient(layer, [blob_with(values, device)])


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5)])
def test_prelu_gradient_other_shapes(device, shape):
    values = away_from(torch.linspace(-1, 1, math.prod(shape), dtype=torch.float64), [0.0])
    layer = make_layer('type: "PReLU" prelu_param { filler { type: "uniform" } }', device=device)
    check_gradient(layer, [blob_with(values.reshape(shape), device)])


def test_prelu_slope_diff_accumulates(device):
    layer = make_layer('type: "PReLU"', device=device)
    bottom, top = random_blob(SHAPE, device=device), Blob((), torch.float64, device)
    layer.layer_setup([bottom], [top])
    layer.forward([bottom], [top])
    top.diff.fill_(1)
    layer.blobs[0].diff.fill_(0)
    layer.backward([top], [True], [bottom])
    once = layer.blobs[0].diff.clone()
    layer.backward([top], [True], [bottom])
    torch.testing.assert_close(layer.blobs[0].diff, 2 * once)
    x = bottom.data
    torch.testing.assert_close(once, (x * (x <= 0)).sum((0, 2, 3)))


def test_prelu_default_filler_and_shapes(device):
    layer = make_layer('type: "PReLU"', device=device)
    layer.layer_setup([random_blob(SHAPE, device=device)], [Blob((), torch.float64, device)])
    assert layer.blobs[0].shape == (3,)
    assert torch.all(layer.blobs[0].data == 0.25)
    shared = make_layer('type: "PReLU" prelu_param { channel_shared: true }', device=device)
    shared.layer_setup([random_blob(SHAPE, device=device)], [Blob((), torch.float64, device)])
    assert shared.blobs[0].shape == ()


def test_against_torch(device):
    x = random_blob(SHAPE, -3, 3, device=device)
    cases = {
        'type: "ReLU" relu_param { negative_slope: 0.1 }':
            torch.nn.functional.leaky_relu(x.data, 0.1),
        'type: "ELU" elu_param { alpha: 0.7 }': torch.nn.functional.elu(x.data, 0.7),
        'type: "BNLL"': torch.nn.functional.softplus(x.data),
        'type: "Swish" swish_param { beta: 1.5 }': x.data * torch.sigmoid(1.5 * x.data),
        'type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }': 2 ** (0.5 * x.data + 0.1),
        'type: "Log" log_param { base: 3 scale: 2 shift: 7 }':
            torch.log(2 * x.data + 7) / math.log(3),
        'type: "Power" power_param { power: 3 scale: 0.5 shift: 0.25 }':
            (0.5 * x.data + 0.25) ** 3,
        'type: "Clip" clip_param { min: -0.5 max: 0.7 }': x.data.clamp(-0.5, 0.7),
        'type: "Threshold" threshold_param { threshold: 0.2 }': (x.data > 0.2).double(),
        'type: "AbsVal"': x.data.abs(),
    }
    for text, expected in cases.items():
        layer, top = make_layer(text, device=device), Blob((), torch.float64, device)
        layer.layer_setup([x], [top])
        layer.forward([x], [top])
        torch.testing.assert_close(top.data, expected, rtol=1e-6, atol=1e-6, msg=text)


@pytest.mark.parametrize("text", [
    'type: "ReLU" relu_param { negative_slope: -0.3 }',
    'type: "ELU"',
    'type: "Sigmoid"',
    'type: "TanH"',
    'type: "Swish" swish_param { beta: 1.5 }',
    'type: "Clip" clip_param { min: -0.5 max: 0.7 }',
    'type: "Log" log_param { shift: 2 }',
    'type: "Power" power_param { power: 1.7 shift: 2 }',
    'type: "BNLL"',
    'type: "PReLU" prelu_param { filler { type: "gaussian" std: 0.3 } }',
    'type: "Dropout"',
])
def test_in_place_matches_out_of_place(device, text):
    x = random_blob(SHAPE, -1, 1, device=device)
    dy = random_blob(SHAPE, -1, 1, device=device, generator=torch.Generator().manual_seed(5))
    results = []
    for in_place in (False, True):
        layer = make_layer(text, device=device)
        bottom = random_blob(SHAPE, values=x.data.cpu().numpy(), device=device)
        top = bottom if in_place else Blob((), torch.float64, device)
        torch.manual_seed(7)
        layer.layer_setup([bottom], [top])
        if layer.blobs:
            layer.blobs[0].data.copy_(torch.linspace(-0.5, 0.5, layer.blobs[0].count()))
            layer.blobs[0].diff.zero_()
        layer.forward([bottom], [top])
        y = top.data.clone()
        top.diff.copy_(dy.data)
        layer.backward([top], [True], [bottom])
        results.append((y, bottom.diff.clone(), [b.diff.clone() for b in layer.blobs]))
    (y0, dx0, p0), (y1, dx1, p1) = results
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(dx1, dx0)
    for a, b in zip(p1, p0):
        torch.testing.assert_close(a, b)


def test_absval_refuses_in_place(device):
    blob = random_blob(SHAPE, device=device)
    with pytest.raises(LayerSetupError, match="'layer'.*in-place"):
        make_layer('type: "AbsVal"', device=device).layer_setup([blob], [blob])


def test_threshold_backward_writes_zero(device):
    layer = make_layer('type: "Threshold" threshold_param { threshold: 0.2 }', device=device)
    bottom, top = random_blob(SHAPE, device=device), Blob((), torch.float64, device)
    layer.layer_setup([bottom], [top])
    layer.forward([bottom], [top])
    top.diff.fill_(1)
    bottom.diff.fill_(3)
    layer.backward([top], [True], [bottom])
    assert torch.all(bottom.diff == 0)


def test_dropout_statistics(device):
    p = 0.3
    layer = make_layer(f'type: "Dropout" dropout_param {{ dropout_ratio: {p} }}', device=device)
    x = random_blob((200, 500), 1, 2, device=device)
    top = Blob((), torch.float64, device)
    layer.layer_setup([x], [top])
    torch.manual_seed(11)
    layer.forward([x], [top])
    y = top.data
    kept = y != 0
    ratio = float(layer.param.dropout_param.dropout_ratio)  # as stored: a float32 value
    assert abs(1 - kept.double().mean().item() - ratio) < 0.005
    assert torch.equal(y[kept], x.data[kept] * (1.0 / (1.0 - ratio)))
    # E[y] = x: the mean ratio y / x over 100,000 units is 1 within a few standard errors.
    assert abs((y / x.data).mean().item() - 1) < 0.01
    top.diff.fill_(1)
    layer.backward([top], [True], [x])
    torch.testing.assert_close(x.diff, (kept.double() / (1 - ratio)))


def test_dropout_test_phase_is_identity(device):
    layer = make_layer('type: "Dropout" dropout_param { dropout_ratio: 0.7 }', device=device,
                       phase=caffe_pb2.TEST)
    x, top = random_blob(SHAPE, device=device), Blob((), torch.float64, device)
    layer.layer_setup([x], [top])
    layer.forward([x], [top])
    assert torch.equal(top.data, x.data)
    top.diff.copy_(x.data)
    layer.backward([top], [True], [x])
    assert torch.equal(x.diff, x.data)


@pytest.mark.parametrize("text,message", [
    ('type: "Dropout" dropout_param { dropout_ratio: 1 }', "dropout_ratio"),
    ('type: "Dropout" dropout_param { dropout_ratio: -0.1 }', "dropout_ratio"),
    ('type: "Clip" clip_param { min: 1 max: 0 }', "min"),
    ('type: "Clip"', "min and max"),
    ('type: "Log" log_param { base: 0 }', "base"),
    ('type: "Log" log_param { base: -2 }', "base"),
    ('type: "Log" log_param { base: 1 }', "base 1"),
    ('type: "Exp" exp_param { base: -3 }', "base"),
    ('type: "PReLU" prelu_param { channel_shared: true } blobs { shape { dim: 3 } data: 1 '
     'data: 2 data: 3 }', "slope"),
    ('type: "PReLU" blobs { shape { dim: 2 } data: 1 data: 2 }', "slope"),
])
def test_bad_parameters_fail_at_setup(text, message):
    layer = make_layer(text)
    with pytest.raises(LayerSetupError, match=f"layer 'layer'.*{message}"):
        layer.layer_setup([random_blob(SHAPE)], [Blob((), torch.float64)])


def test_prelu_needs_two_axes():
    with pytest.raises(LayerSetupError, match="2 axes"):
        make_layer('type: "PReLU"').layer_setup([random_blob((5,))], [Blob((), torch.float64)])


def test_power_constant_output_follows_c_pow(device):
    # scale 0 makes y = shift ^ power a constant; C's pow gives NaN for (-2) ^ 0.5.
    layer = make_layer('type: "Power" power_param { power: 0.5 scale: 0 shift: -2 }',
                       device=device)
    x, top = random_blob(SHAPE, device=device), Blob((), torch.float64, device)
    layer.layer_setup([x], [top])
    layer.forward([x], [top])
    assert torch.isnan(top.data).all()
    top.diff.fill_(1)
    layer.backward([top], [True], [x])
    assert torch.all(x.diff == 0)


def test_threshold_gradient_is_zero_away_from_the_threshold(device):
    # Caffe gives Threshold no backward; its derivative is 0 wherever it is defined.
    layer = make_layer('type: "Threshold" threshold_param { threshold: 0.1 }', device=device)
    check_gradient(layer, [random_blob((2, 3, 4), device=device)], kink=0.1, kink_range=0.01)


@pytest.mark.parametrize("text", ['type: "PReLU"', 'type: "ELU" elu_param { alpha: -0.5 }',
                                  'type: "ReLU" relu_param { negative_slope: -0.5 }'])
def test_in_place_layer_keeps_no_input_copy_without_backward(text):
    """Deploy nets never call backward (Layer.need_backward cleared): no copy of the input,
    same output (negative slopes: the layers that otherwise keep one)."""
    outputs = []
    for need_backward in (True, False):
        layer = make_layer(text)
        x = random_blob(SHAPE)
        layer.layer_setup([x], [x])
        layer.need_backward = need_backward
        layer.forward([x], [x])
        assert (layer._saved is not None) == need_backward
        outputs.append(x.data.clone())
    torch.testing.assert_close(outputs[0], outputs[1])
