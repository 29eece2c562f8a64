"""senlinuc/caffe_ocr's DenseBlock against torch's batch norm and the fork's convolution loop."""
import pytest
import torch
import torch.nn.functional as F

import caffe
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.testing import check_gradient, make_layer, random_blob

PARAM = """type: "DenseBlock" denseblock_param {{ numTransition: 2 initChannel: 64 growthRate: 3
  use_BC: {bc} moving_average_fraction: 0.2 Filter_Filler {{ type: "gaussian" std: 0.3 }}
  BN_Scaler_Filler {{ type: "uniform" min: 0.5 max: 1.5 }}
  BN_Bias_Filler {{ type: "uniform" min: -0.2 max: 0.2 }} }}"""


def block(bc, phase, device="cpu"):
    layer = make_layer(PARAM.format(bc=bc), device=device, phase=phase)
    x = random_blob((2, 4, 5, 4), device=device, generator=torch.Generator().manual_seed(1))
    top = Blob((), torch.float64, x.device)
    layer.layer_setup([x], [top])
    gen = torch.Generator().manual_seed(2)
    for blob in layer.blobs[:-1]:     # statistics that are not 0 and 1
        if blob.shape[0] == 1:
            blob.data.copy_(torch.rand(blob.shape, generator=gen, dtype=torch.float64) + 0.2)
    return layer, x, top


@pytest.mark.parametrize("bc", ["false", "true"])
@pytest.mark.parametrize("phase", [caffe.TEST, caffe.TRAIN])
def test_dense_block_is_cudnn_batch_norm_relu_true_convolution(device, bc, phase):
    """cuDNN's code: batch norm (stored statistics in TEST; the batch's in TRAIN, the stored
    ones moved by moving_average_fraction), ReLU, CUDNN_CONVOLUTION (flipped kernel)."""
    layer, x, top = block(bc, phase, device)
    t = 2
    blobs = [b.data.clone() for b in layer.blobs]
    layer.forward([x], [top])
    feats = x.data
    for i in range(t):
        units = [(t + i, 2 * t + i, 3 * t + i, 4 * t + i, 5 * t + i, 0),
                 (6 * t + i, 7 * t + i, 8 * t + i, 9 * t + i, i, 1)] if bc == "true" else \
            [(t + i, 2 * t + i, 3 * t + i, 4 * t + i, i, 1)]
        h = feats
        for s, b, m, v, w, pad in units:
            mean, var = blobs[m].flatten().clone(), blobs[v].flatten().clone()
            h = F.batch_norm(h, mean, var, blobs[s].flatten(), blobs[b].flatten(),
                             training=phase == caffe.TRAIN, momentum=0.2, eps=1e-5)
            if phase == caffe.TRAIN:    # torch's running statistics are cuDNN's
                torch.testing.assert_close(layer.blobs[m].data.flatten(), mean)
                torch.testing.assert_close(layer.blobs[v].data.flatten(), var)
            h = F.conv2d(torch.relu(h), blobs[w].flip(2, 3), padding=pad)
        feats = torch.cat([feats, h], 1)
    torch.testing.assert_close(top.data, feats)


def test_dense_block_convolution_is_the_forks_loop():
    """caffe_ocr's convolution_Fwd: out[h, w] += W[fx, fy] x[h + 1 - fx, w + 1 - fy], zero
    padded (a true convolution); batch norm made the identity, input positive."""
    layer, x, top = block("false", caffe.TEST)
    x.data.copy_(x.data.abs() + 0.1)
    for j in range(2, 10):             # scalers 1, biases 0, means 0, variances 1 - eps
        layer.blobs[j].data.fill_((1.0, 0.0, 0.0, 1 - 1e-5)[(j - 2) // 2])
    layer.forward([x], [top])
    w, xs = layer.blobs[0].data, x.data
    expected = torch.zeros(2, 3, 5, 4, dtype=torch.float64)
    for n in range(2):
        for o in range(3):
            for h in range(5):
                for v in range(4):
                    for c in range(4):
                        for fx in range(3):
                            for fy in range(3):
                                a, b = h + 1 - fx, v + 1 - fy
                                if 0 <= a < 5 and 0 <= b < 4:
                                    expected[n, o, h, v] += w[o, c, fx, fy] * xs[n, c, a, b]
    torch.testing.assert_close(top.data[:, 4:7], expected)


@pytest.mark.parametrize("bc", ["false", "true"])
def test_dense_block_gradient(device, bc):
    # TRAIN: every blob (the statistics get none, as they feed nothing here); a small step:
    # the batch statistics move every ReLU input, and 1e-4 makes some cross zero.
    layer, x, _ = block(bc, caffe.TRAIN, device)
    check_gradient(layer, [x], step=1e-6)
    layer, x, _ = block(bc, caffe.TEST, device)
    check_gradient(layer, [x], check_params=False)


def test_dense_block_param_specs_and_checks():
    layer, _, _ = block("false", caffe.TEST)
    assert [p.lr_mult for p in layer.param.param] == [1.0] * 6 + [0.0] * 5   # as the fork
    with pytest.raises(LayerSetupError, match="use_dropout"):
        make_layer('type: "DenseBlock" denseblock_param { use_dropout: true }').layer_setup(
            [random_blob((1, 2, 3, 3))], [Blob((), torch.float64)])
