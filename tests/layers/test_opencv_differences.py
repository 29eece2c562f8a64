"""Where OpenCV dnn and the forks disagree, the fork (or BVLC) is right: each semantics pinned
from its source, the expected values computed here from the source's loop or formula
(docs/forks/community.md, "Where OpenCV differs")."""
import math

import numpy as np
import torch

import caffe
from caffe.blob import Blob
from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from caffe.testing import make_layer, random_blob


def run(layer, bottom):
    top = Blob((), torch.float64, bottom[0].device)
    layer.layer_setup(bottom, [top])
    layer.forward(bottom, [top])
    return top.data


def test_axpy_is_a_times_bottom1_plus_bottom2(device):
    """hujie-frank/SENet axpy_layer.cpp: top = bottom[2], then caffe_axpy(a[n, c], x[n, c])
    per channel. OpenCV's importer rewrites it as Scale(bottom[2] by a) + bottom[1]."""
    gen = torch.Generator().manual_seed(8)
    a, x, y = (random_blob(s, device=device, generator=gen)
               for s in [(2, 3, 1, 1), (2, 3, 4, 5), (2, 3, 4, 5)])
    out = run(make_layer('type: "Axpy"', device=device), [a, x, y]).cpu()
    a, x, y = a.data.cpu(), x.data.cpu(), y.data.cpu()
    expected = y.clone()
    for n in range(2):
        for c in range(3):
            expected[n, c] += float(a[n, c, 0, 0]) * x[n, c]
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, a * y + x)           # OpenCV's reading


def test_lrn_uses_k(device):
    """BVLC lrn_layer.cpp, ACROSS_CHANNELS: scale = k + alpha / n * sum of squares over the
    n channels centred on c (zero padded), y = x scale^-beta. Fast R-CNN's VGG_CNN_M_1024 sets
    k: 2, which OpenCV ignores (it uses 1)."""
    x = random_blob((1, 7, 3, 2), -2, 2, device=device)
    n, alpha, beta, k = 5, 0.0005, 0.75, 2.0
    out = run(make_layer(f'type: "LRN" lrn_param {{ local_size: {n} alpha: {alpha} '
                         f'beta: {beta} k: {k} }}', device=device), [x]).cpu()
    v = x.data.cpu()
    expected = torch.empty_like(v)
    for c in range(7):
        window = v[:, max(0, c - n // 2):min(7, c + n // 2 + 1)]
        expected[:, c] = v[:, c] * (k + alpha / n * (window ** 2).sum(1)) ** -beta
    torch.testing.assert_close(out, expected)
    k1 = run(make_layer(f'type: "LRN" lrn_param {{ local_size: {n} alpha: {alpha} '
                        f'beta: {beta} }}', device=device), [x]).cpu()
    assert not torch.allclose(out, k1)


def test_prior_box_truncates_fractional_sizes(device):
    """weiliu89/caffe (ssd) prior_box_layer.cpp: `int min_size_ = min_sizes_[s]` and
    `int max_size_`: Pelee's min_size 30.4 / max_size 60.8 make boxes of 30 and sqrt(30 60).
    OpenCV keeps 30.4 and sqrt(30.4 60.8)."""
    layer = make_layer('type: "PriorBox" prior_box_param { min_size: 30.4 max_size: 60.8 '
                       'aspect_ratio: 2 flip: false step: 16 }', device=device)
    out = run(layer, [random_blob((1, 1, 1, 1), device=device),
                      random_blob((1, 1, 160, 160), device=device)])[0, 0].view(-1, 4).cpu()
    c = 8.0                                         # (0 + 0.5) * step
    sides = [(30, 30), (math.sqrt(30 * 60),) * 2, (30 * math.sqrt(2), 30 / math.sqrt(2))]
    expected = torch.tensor([[c - w / 2, c - h / 2, c + w / 2, c + h / 2] for w, h in sides],
                            dtype=torch.float64) / 160
    torch.testing.assert_close(out, expected)


CVJENA = """name: "VGG19_cvgj-like"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 6 dim: 5 } } }
layer { name: "conv1_1" type: "Convolution" bottom: "data" top: "conv1_1"
        convolution_param { num_output: 4 pad: 1 kernel_size: 3
                            weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "conv1_1/bn" type: "BatchNorm" bottom: "conv1_1" top: "conv1_1/bn"
        batch_norm_param { use_global_stats: true } }
layer { name: "relu1_1" type: "ReLU" bottom: "conv1_1/bn" top: "conv1_1/bn" }
"""


def test_cvjena_batch_norm_without_scale():
    """cvjena/cnn-models' VGG19_cvgj: BatchNorm after each convolution with no Scale after it
    and an in-place ReLU. BVLC batch_norm_layer.cpp: y = (x - mean / s) / sqrt(var / s + eps),
    s the third blob (0 reads as 0 statistics). OpenCV dnn 4.14 gives other values here."""
    net = caffe.Net(parse_text(CVJENA, caffe_pb2.NetParameter()), caffe.TEST)
    rng = np.random.RandomState(0)
    mean, var = rng.uniform(-1, 1, 4), rng.uniform(0.5, 1.5, 4)
    for blob, value in zip(net.params["conv1_1/bn"], (mean * 7, var * 7, [7.0])):
        blob.data[...] = value
    x = rng.uniform(-1, 1, (1, 3, 6, 5))
    net.blobs["data"].data[...] = x
    net.forward()
    conv = net.blobs["conv1_1"].data.astype(np.float64)
    expected = np.maximum((conv - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5), 0)
    np.testing.assert_allclose(net.blobs["conv1_1/bn"].data, expected, rtol=1e-5, atol=1e-5)
