"""Community layers (OpenCV's Caffe importer list): float64 gradients and reference formulas."""
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
