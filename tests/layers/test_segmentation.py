"""The forks' segmentation layers: float64 gradients, reference formulas, both BN forms."""
import pytest
import torch
import torch.nn.functional as F

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2
from caffe.testing import check_gradient, make_layer, random_blob


def run(layer, bottom, num_tops=1):
    top = [Blob((), torch.float64, bottom[0].device) for _ in range(num_tops)]
    layer.layer_setup(bottom, top)
    layer.forward(bottom, top)
    return top


INTERP = ["zoom_factor: 3", "shrink_factor: 2", "height: 5 width: 9",
          "zoom_factor: 2 shrink_factor: 2", "zoom_factor: 2 pad_beg: -1 pad_end: -1",
          "height: 1 width: 1", "height: 4 width: 7"]


@pytest.mark.parametrize("param", INTERP)
def test_interp_gradient(device, param):
    layer = make_layer(f'type: "Interp" interp_param {{ {param} }}', device=device)
    check_gradient(layer, [random_blob((2, 2, 4, 7), device=device)])


def test_interp_is_bilinear_with_corners_aligned(device):
    x = random_blob((2, 3, 5, 4), device=device)
    (top,) = run(make_layer('type: "Interp" interp_param { zoom_factor: 4 }', device=device), [x])
    assert tuple(top.shape) == (2, 3, 17, 13)
    expected = F.interpolate(x.data, size=(17, 13), mode="bilinear", align_corners=True)
    torch.testing.assert_close(top.data, expected)


def test_interp_refuses_positive_padding():
    with pytest.raises(LayerSetupError, match="non-positive"):
        run(make_layer('type: "Interp" interp_param { zoom_factor: 2 pad_beg: 1 }'),
            [random_blob((1, 1, 3, 3))])


PSP_BN = ['bn_param { momentum: 0.8 slope_filler { type: "uniform" min: 0.5 max: 2 } '
          'bias_filler { type: "gaussian" } }']
SEGNET_BN = 'bn_param { bn_mode: %s scale_filler { type: "uniform" min: 0.5 max: 2 } ' \
            'shift_filler { type: "gaussian" } }'


@pytest.mark.parametrize("param", PSP_BN + [SEGNET_BN % "LEARN", SEGNET_BN % "INFERENCE"])
def test_bn_gradient(device, param):
    layer = make_layer(f'type: "BN" {param}', device=device)
    check_gradient(layer, [random_blob((2, 3, 3, 2), -2, 2, device=device)])


def test_psp_bn_frozen_gradient(device):
    layer = make_layer('type: "BN" bn_param { frozen: true }', device=device)
    x = random_blob((2, 3, 2, 2), device=device)
    layer.layer_setup([x], [Blob((), torch.float64, device)])
    layer.blobs[2].data.uniform_(-1, 1)
    layer.blobs[3].data.uniform_(0.5, 2)
    check_gradient(layer, [x], top=[Blob(x.shape, torch.float64, device)], check_params=False)
    assert [p.lr_mult for p in layer.param.param] == [0, 0, 0, 0]


def test_psp_bn_statistics_and_phases(device):
    x = random_blob((4, 3, 5, 5), -3, 3, device=device)
    layer = make_layer('type: "BN" bn_param { momentum: 0.9 eps: 1e-5 '
                       'slope_filler { type: "constant" value: 1 } }', device=device)
    (top,) = run(layer, [x])
    expected = F.batch_norm(x.data, None, None, training=True, eps=1e-5)
    torch.testing.assert_close(top.data, expected)
    mean = x.data.mean(dim=(0, 2, 3))
    var = x.data.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(layer.blobs[2].data.flatten(), 0.1 * mean)
    torch.testing.assert_close(layer.blobs[3].data.flatten(), 0.1 * var)
    assert [p.lr_mult for p in layer.param.param][2:] == [0, 0]
    test = make_layer('type: "BN"', device=device, phase=caffe_pb2.TEST)
    test.blobs = [b for b in layer.blobs]
    for b in test.blobs[:2]:
        b.data.fill_(1.5)
    (top,) = run(test, [x])
    torch.testing.assert_close(top.data, 1.5 * (x.data - layer.blobs[2].data) /
                               torch.sqrt(layer.blobs[3].data + 1e-5) + 1.5)


def test_segnet_bn_learn_tops_and_inference(device):
    x = random_blob((2, 3, 4, 4), -2, 2, device=device)
    layer = make_layer('type: "BN" ' + SEGNET_BN % "LEARN", device=device,
                       phase=caffe_pb2.TEST)
    y, mean, var = run(layer, [x], 3)
    assert layer.segnet and len(layer.blobs) == 2
    torch.testing.assert_close(mean.data.flatten(), x.data.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(var.data.flatten(), x.data.var(dim=(0, 2, 3), unbiased=False))
    scale, shift = layer.blobs[0].data, layer.blobs[1].data
    torch.testing.assert_close(y.data, scale * (x.data - mean.data) /
                               torch.sqrt(var.data + 1e-9) + shift)
    inference = make_layer('type: "BN" bn_param { bn_mode: INFERENCE }', device=device)
    inference.blobs = layer.blobs
    (y,) = run(inference, [x])
    torch.testing.assert_close(y.data, scale * x.data + shift)


def test_bn_form_from_blob_count():
    """No bn_param field set: two loaded blobs mean SegNet's BN, four PSPNet's."""
    x = random_blob((1, 2, 2, 2))
    for n, segnet in ((2, True), (4, False)):
        param = make_layer('type: "BN"').param
        for _ in range(n):
            param.blobs.add().shape.dim.extend([1, 2, 1, 1])
            param.blobs[-1].data.extend([1.0, 2.0])
        layer = make_layer(param)
        run(layer, [x])
        assert layer.segnet is segnet


def pooled(device, shape=(2, 3, 6, 7)):
    """Max-pooled values and their argmax masks, as SegNet's encoder makes them."""
    x = random_blob(shape, device=device)
    y, idx = F.max_pool2d(x.data, 2, 2, ceil_mode=True, return_indices=True)
    return x, _blob(y), _blob(idx.double())


def _blob(t):
    b = Blob(tuple(t.shape), t.dtype, t.device)
    b.data.copy_(t)
    return b


@pytest.mark.parametrize("param", ["scale: 2 pad_out_w: true", "upsample_h: 6 upsample_w: 7",
                                   "scale_h: 2 scale_w: 2 pad_out_w: true"])
def test_upsample_unpools_by_mask(device, param):
    x, y, mask = pooled(device)
    layer = make_layer(f'type: "Upsample" upsample_param {{ {param} }}', device=device)
    (top,) = run(layer, [y, mask])
    expected = F.max_unpool2d(y.data, mask.data.long(), 2, 2, output_size=(6, 7))
    torch.testing.assert_close(top.data, expected)
    check_gradient(layer, [y, mask], check_bottom=[0])


def test_upsample_nearest_one_bottom(device):
    x = random_blob((2, 3, 3, 4), device=device)
    layer = make_layer('type: "Upsample" upsample_param { scale: 2 }', device=device)
    (top,) = run(layer, [x])
    torch.testing.assert_close(top.data, F.interpolate(x.data, scale_factor=2, mode="nearest"))
    check_gradient(layer, [x])


def test_upsample_mask_out_of_range():
    x, y, mask = pooled("cpu")
    layer = make_layer('type: "Upsample" upsample_param { upsample_h: 2 upsample_w: 2 }')
    with pytest.raises(LayerSetupError, match="out of range"):
        run(layer, [y, mask])


def test_seg_accuracy_confusion_matrix():
    scores = torch.zeros(1, 3, 2, 3, dtype=torch.float64)
    pred = torch.tensor([[0, 1, 2], [2, 2, 1]])
    scores.scatter_(1, pred.view(1, 1, 2, 3), 1.0)
    label = torch.tensor([[0, 1, 1], [2, 255, 0]], dtype=torch.float64).view(1, 1, 2, 3)
    layer = make_layer('type: "SegAccuracy" seg_accuracy_param { ignore_label: 255 }')
    (top,) = run(layer, [_blob(scores), _blob(label)])
    # pixels (label, pred): (0,0) (1,1) (1,2) (2,2) (0,1) -> accuracy 3/5;
    # recall (1/2 + 1/2 + 1) / 3; IoU 1/2, 1/3, 1/2
    torch.testing.assert_close(top.data.flatten(), torch.tensor(
        [3 / 5, 2 / 3, (1 / 2 + 1 / 3 + 1 / 2) / 3], dtype=torch.float64))
