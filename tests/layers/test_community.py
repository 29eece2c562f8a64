"""Community layers (OpenCV's Caffe importer list): float64 gradients and reference formulas."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.testing import check_gradient, make_layer, random_blob
from tests.layers.test_neuron import away_from, blob_with


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


SHAPE = (2, 3, 3, 2)


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
