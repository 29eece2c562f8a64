"""Community layers (OpenCV's Caffe importer list): float64 gradients and reference formulas."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.testing import check_gradient, make_layer, random_blob


def run(layer, bottom):
    top = Blob((), torch.float64, bottom[0].device)
    layer.layer_setup(bottom, [top])
    layer.forward(bottom, [top])
    return top


@pytest.mark.parametrize("kind", ["ConvolutionDepthwise", "DepthwiseConvolution"])
def test_depthwise_convolution(device, kind):
    x = random_blob((2, 3, 5, 4), device=device)
    layer = make_layer(f'type: "{kind}" convolution_param {{ num_output: 3 kernel_size: 3 pad: 1 '
                       'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }',
                       device=device)
    top = run(layer, [x])
    w, b = layer.blobs[0].data, layer.blobs[1].data
    assert tuple(w.shape) == (3, 1, 3, 3)
    torch.testing.assert_close(top.data, F.conv2d(x.data, w, b, padding=1, groups=3))
    check_gradient(layer, [x])


def test_depthwise_refuses_other_groups():
    with pytest.raises(LayerSetupError, match="group 2"):
        run(make_layer('type: "ConvolutionDepthwise" convolution_param { num_output: 4 '
                       'kernel_size: 1 group: 2 }'), [random_blob((1, 4, 2, 2))])


def test_shuffle_channel(device):
    x = random_blob((2, 6, 2, 3), device=device)
    layer = make_layer('type: "ShuffleChannel" shuffle_channel_param { group: 2 }', device=device)
    top = run(layer, [x])
    torch.testing.assert_close(top.data, x.data[:, [0, 3, 1, 4, 2, 5]])
    check_gradient(layer, [x])


@pytest.mark.parametrize("reverse", ["false", "true"])
def test_reorg(device, reverse):
    x = random_blob((2, 8, 4, 6) if reverse == "false" else (2, 16, 2, 3), device=device)
    layer = make_layer(f'type: "Reorg" reorg_param {{ stride: 2 reverse: {reverse} }}',
                       device=device)
    top = run(layer, [x])
    if reverse == "false":
        assert tuple(top.shape) == (2, 32, 2, 3)
        # darknet's loop, written out
        expected = torch.empty(2, 8 * 4 * 6, dtype=x.data.dtype)
        flat = x.data.reshape(2, -1).cpu()
        for k in range(8):
            for j in range(4):
                for i in range(6):
                    c2, off = k % 2, k // 2
                    src = (i * 2 + off % 2) + 12 * ((j * 2 + off // 2) + 8 * c2)
                    expected[:, i + 6 * (j + 4 * k)] = flat[:, src]
        torch.testing.assert_close(top.data.reshape(2, -1).cpu(), expected)
    else:
        assert tuple(top.shape) == (2, 4, 4, 6)
    check_gradient(layer, [x])


def test_region(device):
    x = random_blob((1, 2 * (4 + 1 + 3), 2, 2), -3, 3, device=device)
    layer = make_layer('type: "Region" region_param { classes: 3 coords: 4 '
                       'boxes_of_each_grid: 2 softmax: true }', device=device)
    y = run(layer, [x]).data.view(1, 2, 8, 2, 2)
    v = x.data.view(1, 2, 8, 2, 2)
    torch.testing.assert_close(y[:, :, :2], torch.sigmoid(v[:, :, :2]))
    torch.testing.assert_close(y[:, :, 2:4], v[:, :, 2:4])
    torch.testing.assert_close(y[:, :, 4], torch.sigmoid(v[:, :, 4]))
    torch.testing.assert_close(y[:, :, 5:], torch.softmax(v[:, :, 5:], 2))


def test_axpy(device):
    a, x, b = (random_blob(s, device=device, generator=torch.Generator().manual_seed(i))
               for i, s in enumerate([(2, 3, 1, 1), (2, 3, 4, 2), (2, 3, 4, 2)]))
    layer = make_layer('type: "Axpy"', device=device)
    top = run(layer, [a, x, b])
    torch.testing.assert_close(top.data, a.data * x.data + b.data)
    check_gradient(layer, [a, x, b])


def test_transpose(device):
    """senlinuc/caffe_ocr's Transpose: top axis i is bottom axis dim[i] (its own example:
    N x C x H x W to W x N x H x C)."""
    x = random_blob((2, 3, 4, 5), device=device)
    layer = make_layer('type: "Transpose" transpose_param { dim: 3 dim: 0 dim: 2 dim: 1 }',
                       device=device)
    top = run(layer, [x])
    assert tuple(top.shape) == (5, 2, 4, 3)
    for w, n, h, c in [(0, 0, 0, 0), (4, 1, 3, 2), (2, 1, 1, 0)]:
        assert top.data[w, n, h, c] == x.data[n, c, h, w]
    check_gradient(layer, [x])


def test_transpose_needs_every_axis():
    with pytest.raises(LayerSetupError, match="each of the 4"):
        run(make_layer('type: "Transpose" transpose_param { dim: 1 dim: 0 }'),
            [random_blob((2, 3, 4, 5))])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_reverse(device, axis):
    x = random_blob((3, 4, 2), device=device)
    layer = make_layer(f'type: "Reverse" reverse_param {{ axis: {axis} }}', device=device)
    top = run(layer, [x])
    n = x.shape[axis]
    for i in range(n):
        torch.testing.assert_close(top.data.select(axis, i), x.data.select(axis, n - 1 - i))
    check_gradient(layer, [x])


SHAPE = (2, 3, 3, 2)


def away_from(values, kinks, gap):
    """Move values lying within `gap` of a kink (where the derivative jumps) off it."""
    for k in kinks:
        values = torch.where((values - k).abs() < gap, values + 2 * gap, values)
    return values


def blob_with(values, device):
    return random_blob(tuple(values.shape), values=values.numpy(), device=device)


# -- community activations (docs/forks/community.md): the forks' formulas, torch's functions
# as the reference, float64 gradients over the whole range, kinks avoided.
COMMUNITY = [
    ('type: "ReLU6"', lambda x: torch.nn.functional.relu6(x), [0.0, 6.0]),
    ('type: "ReLU6" relu6_param { negative_slope: 0.1 }',
     lambda x: torch.clamp(torch.where(x > 0, x, 0.1 * x), max=6), [0.0, 6.0]),
    ('type: "ReLU6" relu6_param { negative_slope: -0.2 }',
     lambda x: torch.clamp(torch.where(x > 0, x, -0.2 * x), max=6), [0.0, 6.0]),
    ('type: "Mish"', lambda x: torch.nn.functional.mish(x), []),
    ('type: "HardSwish"', lambda x: torch.nn.functional.hardswish(x), [-3.0, 3.0]),
    # eric612's 0.2 x + 0.5 (torch's hardsigmoid is MobileNet v3's x / 6 + 0.5)
    ('type: "HardSigmoid"', lambda x: torch.clamp(0.2 * x + 0.5, 0, 1), [-2.5, 2.5]),
]


def community_input(kinks, device):
    values = torch.rand(SHAPE, generator=torch.Generator().manual_seed(11),
                        dtype=torch.float64) * 18 - 9
    return blob_with(away_from(values, kinks, gap=0.05), device)


@pytest.mark.parametrize("text,formula,kinks", COMMUNITY, ids=[t for t, *_ in COMMUNITY])
def test_community_activation(device, text, formula, kinks):
    x = community_input(kinks, device)
    layer = make_layer(text, device=device)
    top = Blob((), torch.float64, device)
    layer.layer_setup([x], [top])
    layer.forward([x], [top])
    torch.testing.assert_close(top.data, formula(x.data))
    check_gradient(make_layer(text, device=device), [x])


@pytest.mark.parametrize("text,formula,kinks", COMMUNITY, ids=[t for t, *_ in COMMUNITY])
def test_community_activation_in_place(device, text, formula, kinks):
    x = community_input(kinks, device)
    dy = random_blob(SHAPE, -1, 1, device=device, generator=torch.Generator().manual_seed(5))
    results = []
    for in_place in (False, True):
        layer = make_layer(text, device=device)
        bottom = random_blob(SHAPE, values=x.data.cpu().numpy(), device=device)
        top = bottom if in_place else Blob((), torch.float64, device)
        layer.layer_setup([bottom], [top])
        layer.forward([bottom], [top])
        y = top.data.clone()
        top.diff.copy_(dy.data)
        layer.backward([top], [True], [bottom])
        results.append((y, bottom.diff.clone()))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])


@pytest.mark.parametrize("kind", ["ReLU6", "Mish", "HardSwish", "HardSigmoid"])
def test_community_activation_equals_opencv(tmp_path, kind):
    """OpenCV dnn registers the same four types with the same defaults: a second oracle."""
    cv2 = pytest.importorskip("cv2")
    import caffe
    text = ('name: "n" layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 '
            f'dim: 3 dim: 4 dim: 5 }} }} }} layer {{ name: "y" type: "{kind}" bottom: "x" '
            'top: "y" }')
    (tmp_path / "n.prototxt").write_text(text)
    x = (torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(1)) * 16 - 8).numpy()
    net = caffe.Net(str(tmp_path / "n.prototxt"), caffe.TEST)
    net.blobs["x"].data[...] = x
    ours = net.forward()["y"]
    cv = cv2.dnn.readNetFromCaffe(str(tmp_path / "n.prototxt"))
    cv.setInput(x)
    np.testing.assert_allclose(cv.forward(), ours, rtol=1e-5, atol=1e-5)


LSTM = ('type: "Lstm" lstm_param {{ num_output: 3 clipping_threshold: {clip} '
        'weight_filler {{ type: "gaussian" std: 0.5 }} '
        'bias_filler {{ type: "gaussian" std: 0.5 }} }}')


def test_lstm_forward_equals_torch_lstm(device):
    """The forks' gate order is (i, f, o, g); torch's nn.LSTM's is (i, f, g, o)."""
    x = random_blob((5, 2, 2, 2), device=device)
    layer = make_layer(LSTM.format(clip=0), device=device)
    top = run(layer, [x])
    assert tuple(top.shape) == (5, 2, 3)
    wx, wh, b = (blob.data for blob in layer.blobs)
    order = torch.cat([torch.arange(0, 6), torch.arange(9, 12), torch.arange(6, 9)]).to(device)
    ref = torch.nn.LSTM(4, 3).to(device=device, dtype=torch.float64)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(wx[order])
        ref.weight_hh_l0.copy_(wh[order])
        ref.bias_ih_l0.copy_(b[order])
        ref.bias_hh_l0.zero_()
        expected, _ = ref(x.data.flatten(2))
    torch.testing.assert_close(top.data, expected)


def test_lstm_gradient(device):
    x = random_blob((4, 2, 3), device=device)
    check_gradient(make_layer(LSTM.format(clip=0), device=device), [x])


def test_lstm_clips_each_steps_gate_gradients(device):
    """The forks clamp every step's pre-activation gradients before they flow on (to h_{t-1},
    the weights and the input); the reference is autograd with that clamp as a hook."""
    x = random_blob((4, 2, 3), -2, 2, device=device)
    layer = make_layer(LSTM.format(clip=0.05), device=device)
    top = run(layer, [x])
    dy = torch.rand(top.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    top.diff.copy_(dy.to(device) * 4 - 2)
    for blob in layer.blobs:
        blob.diff.zero_()
    layer.backward([top], [True], [x])
    wx, wh, b = (blob.data.clone().requires_grad_() for blob in layer.blobs)
    xs = x.data.clone().requires_grad_()
    h = c = torch.zeros(2, 3, dtype=torch.float64, device=device)
    outs = []
    for t in range(4):
        z = xs[t] @ wx.T + b + h @ wh.T
        z.register_hook(lambda grad: grad.clamp(-0.05, 0.05))
        i, f, o = (torch.sigmoid(z[:, k * 3:(k + 1) * 3]) for k in range(3))
        c = f * c + i * torch.tanh(z[:, 9:])
        h = o * torch.tanh(c)
        outs.append(h)
    torch.stack(outs).backward(top.diff)
    torch.testing.assert_close(x.diff, xs.grad)
    for blob, ref in zip(layer.blobs, (wx, wh, b)):
        torch.testing.assert_close(blob.diff, ref.grad)


CTPN = """name: "ctpn-like"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 4 dim: 6 } } }
layer { name: "im2col" type: "Im2col" bottom: "data" top: "im2col"
        convolution_param { pad: 1 kernel_size: 3 } }
layer { name: "im2col_transpose" type: "Transpose" bottom: "im2col" top: "im2col_transpose"
        transpose_param { dim: 3 dim: 2 dim: 0 dim: 1 } }
layer { name: "lstm_input" type: "Reshape" bottom: "im2col_transpose" top: "lstm_input"
        reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 } }
layer { name: "lstm" type: "Lstm" bottom: "lstm_input" top: "lstm"
        lstm_param { num_output: 5 clipping_threshold: 1
                     weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "lstm-reverse1" type: "Reverse" bottom: "lstm_input" top: "rlstm_input"
        reverse_param { axis: 0 } }
layer { name: "rlstm" type: "Lstm" bottom: "rlstm_input" top: "rlstm-output"
        lstm_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "lstm-reverse2" type: "Reverse" bottom: "rlstm-output" top: "rlstm"
        reverse_param { axis: 0 } }
layer { name: "merge_lstm_rlstm" type: "Concat" bottom: "lstm" bottom: "rlstm"
        top: "merge_lstm_rlstm" concat_param { axis: 2 } }
layer { name: "lstm_output_reshape" type: "Reshape" bottom: "merge_lstm_rlstm"
        top: "lstm_output_reshape" reshape_param { shape { dim: -1 dim: 1 } axis: 1 num_axes: 1 } }
layer { name: "lstm_output" type: "Transpose" bottom: "lstm_output_reshape" top: "lstm_output"
        transpose_param { dim: 2 dim: 3 dim: 1 dim: 0 } }
"""


def test_ctpn_style_bidirectional_lstm_net():
    """CTPN's deploy.prototxt pattern: Im2col, Transpose to W x H x C, an Lstm each way along
    the width (Reverse before and after), back to N x C x H x W."""
    import caffe
    from caffe.formats import parse_text
    from caffe.proto import caffe_pb2
    net = caffe.Net(parse_text(CTPN, caffe_pb2.NetParameter()), caffe.TEST)
    assert net.blobs["lstm_input"].data.shape == (6, 4, 27)
    assert net.blobs["lstm_output"].data.shape == (1, 10, 4, 6)
    net.blobs["data"].data[...] = np.random.RandomState(0).uniform(-1, 1, (1, 3, 4, 6))
    out = net.forward()["lstm_output"]
    forward, backward = net.blobs["lstm"].data, net.blobs["rlstm-output"].data
    for h in range(4):
        for w in range(6):
            np.testing.assert_allclose(out[0, :5, h, w], forward[w, h])
            # the backward Lstm read the widths in reverse: its step 5 - w is width w
            np.testing.assert_allclose(out[0, 5:, h, w], backward[5 - w, h])
    np.testing.assert_allclose(net.blobs["rlstm_input"].data, net.blobs["lstm_input"].data[::-1])
