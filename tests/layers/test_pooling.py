"""Pooling's fork dialects: ceil_mode (BVLC PR #3057 / OpenCV's schema) and darknet2caffe's
extra window; expected values from torch's pooling and darknet's rule, not from our code."""
import pytest
import torch
import torch.nn.functional as F

import caffe
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from caffe.testing import check_gradient, make_layer, random_blob


def run(text, x):
    layer = make_layer(text, device=x.device)
    top = Blob((), torch.float64, x.device)
    layer.layer_setup([x], [top])
    layer.forward([x], [top])
    return layer, top.data


@pytest.mark.parametrize("pool,body", [
    ("MAX", "kernel_size: 3 stride: 2 pad: 1"),   # DenseNet's / ResNeXt's stem
    ("AVE", "kernel_size: 2 stride: 2"),          # DenseNet's transitions
    ("MAX", "kernel_size: 3 stride: 2"),
])
def test_ceil_mode_false_is_floor(device, pool, body):
    x = random_blob((2, 3, 56, 55), device=device)
    _, y = run(f'type: "Pooling" pooling_param {{ pool: {pool} {body} ceil_mode: false }}', x)
    k, s = int(body.split()[1]), int(body.split()[3])
    p = int(body.split()[5]) if "pad" in body else 0
    fn = F.max_pool2d if pool == "MAX" else F.avg_pool2d
    torch.testing.assert_close(y, fn(x.data, k, s, p, ceil_mode=False))
    _, ceil = run(f'type: "Pooling" pooling_param {{ pool: {pool} {body} }}', x)
    assert y.shape[2:] != ceil.shape[2:]        # the rule mattered: 56 x 55 rounds both ways


def test_ceil_mode_gradient(device):
    x = random_blob((1, 2, 7, 6), device=device)
    check_gradient(make_layer('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 '
                              'stride: 2 ceil_mode: false }', device=device), [x])


def test_ceil_mode_and_round_mode_must_agree():
    with pytest.raises(LayerSetupError, match="disagree"):
        run('type: "Pooling" pooling_param { kernel_size: 2 round_mode: FLOOR ceil_mode: true }',
            random_blob((1, 1, 4, 4)))
    _, y = run('type: "Pooling" pooling_param { kernel_size: 2 stride: 2 round_mode: FLOOR '
               'ceil_mode: false }', random_blob((1, 1, 5, 5)))
    assert tuple(y.shape) == (1, 1, 2, 2)


def darknet_maxpool(x, size, stride):
    """darknet's maxpool_layer.c: padding size - 1 (its default), windows from -padding / 2."""
    pad = size - 1
    h = (x.shape[2] + pad - size) // stride + 1
    w = (x.shape[3] + pad - size) // stride + 1
    xp = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=-float("inf"))
    return F.max_pool2d(xp, size, stride)[:, :, :h, :w]


def test_darknet2caffe_dialect_keeps_darknet_size(device):
    x = random_blob((2, 3, 13, 13), device=device)
    text = ('type: "Pooling" dialect: "darknet2caffe" pooling_param { pool: MAX '
            'kernel_size: 2 stride: 1 pad: 0 }')
    layer, y = run(text, x)
    torch.testing.assert_close(y, darknet_maxpool(x.data, 2, 1))
    assert tuple(y.shape) == (2, 3, 13, 13)
    _, bvlc = run(text.replace('dialect: "darknet2caffe" ', ''), x)
    assert tuple(bvlc.shape) == (2, 3, 12, 12)
    check_gradient(make_layer(text, device=device), [x])
    # kernel - stride even: the fork's rule adds nothing
    _, y2 = run(text.replace("stride: 1", "stride: 2"), x)
    torch.testing.assert_close(y2, F.max_pool2d(x.data, 2, 2, ceil_mode=True))


def test_unknown_pooling_dialect_is_named():
    with pytest.raises(LayerSetupError, match="darknet2caffe"):
        run('type: "Pooling" dialect: "tiny" pooling_param { kernel_size: 2 }',
            random_blob((1, 1, 4, 4)))


TINY = """name: "yolov3-tiny-like"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 2 dim: 26 dim: 26 } } }
layer { name: "layer10-maxpool" type: "Pooling" bottom: "data" top: "p10"
        pooling_param { stride: 2 pool: MAX kernel_size: 2 pad: 0 } }
layer { name: "layer12-maxpool" type: "Pooling" bottom: "p10" top: "p12"
        pooling_param { stride: 1 pool: MAX kernel_size: 2 pad: 0 } }
layer { name: "layer19-upsample" type: "Upsample" bottom: "p12" top: "up"
        upsample_param { scale: 2 } }
layer { name: "layer20-route" type: "Concat" bottom: "up" bottom: "data" top: "route" }
"""


def test_yolov3_tiny_route_builds():
    net = caffe.Net(parse_text(TINY, caffe_pb2.NetParameter()), caffe.TEST)
    assert net.blobs["p12"].data.shape == (1, 2, 13, 13)
    assert net.blobs["route"].data.shape == (1, 4, 26, 26)
    x = torch.rand(1, 2, 26, 26, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    net.blobs["data"].data[...] = x.numpy()
    net.forward()
    expected = darknet_maxpool(F.max_pool2d(x, 2, 2), 2, 1)
    torch.testing.assert_close(torch.from_numpy(net.blobs["p12"].data).double(), expected,
                               rtol=1e-6, atol=1e-6)


def test_stride_one_pool_keeps_caffe_rule_without_yolo_upsample():
    text = TINY.split('layer { name: "layer19')[0]
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TEST)
    assert net.blobs["p12"].data.shape == (1, 2, 12, 12)


def test_ceil_mode_net_equals_opencv(tmp_path):
    """A DenseNet-style stem and transition (OpenCV's schema has ceil_mode): a second oracle."""
    cv2 = pytest.importorskip("cv2")
    text = """name: "densenet-like"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 2 dim: 15 dim: 14 } } }
layer { name: "pool1" type: "Pooling" bottom: "data" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 ceil_mode: false } }
layer { name: "pool2" type: "Pooling" bottom: "pool1" top: "pool2"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 ceil_mode: false } }
"""
    (tmp_path / "n.prototxt").write_text(text)
    x = torch.rand(1, 2, 15, 14, generator=torch.Generator().manual_seed(2)).numpy()
    net = caffe.Net(str(tmp_path / "n.prototxt"), caffe.TEST)
    net.blobs["data"].data[...] = x
    ours = net.forward()["pool2"]
    assert ours.shape == (1, 2, 4, 3)
    cv = cv2.dnn.readNetFromCaffe(str(tmp_path / "n.prototxt"))
    cv.setInput(x)
    torch.testing.assert_close(torch.from_numpy(cv.forward()), torch.from_numpy(ours))


def test_stride_two_pools_keep_caffe_rule_in_a_yolo_port():
    """A ResNet-style 3 x 3 stride-2 pool beside a YOLO Upsample keeps BVLC's size."""
    text = TINY.replace("stride: 2 pool: MAX kernel_size: 2", "stride: 2 pool: MAX kernel_size: 3")
    text = text.replace('bottom: "up" bottom: "data"', 'bottom: "up" bottom: "up"')
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TEST)
    assert net.blobs["p10"].data.shape == (1, 2, 13, 13)   # ceil((26 - 3) / 2) + 1, not 14
    assert net.blobs["p12"].data.shape == (1, 2, 13, 13)   # the stride-1 one still darknet's
