"""Vision layers: numerical gradients, Caffe's pooling geometry against a literal
transcription of its loops, stochastic pooling statistics, and bad parameters."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.layers.pooling import FLT_MAX, Pool2d, pooled_length
from caffe.layers.vision import col2im, im2col
from caffe.proto import caffe_pb2
from caffe.testing import check_gradient, make_layer, random_blob


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Gradient checks run thousands of tiny kernels: worker threads only add wake-up latency
    # (seconds per test on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def conv(kind, body):
    return f'type: "{kind}" convolution_param {{ {body} {FILLERS} }}'


def setup(layer, bottom, num_tops=1):
    top = [Blob((), bottom[0].dtype, bottom[0].device) for _ in range(num_tops)]
    layer.layer_setup(bottom, top)
    return top


# -- convolution -----------------------------------------------------------------------------
CONV = [
    ("Convolution", "num_output: 3 kernel_size: 3", (2, 2, 5, 4)),
    ("Convolution", "num_output: 4 kernel_size: 2 group: 2", (1, 4, 4, 4)),
    ("Convolution", "num_output: 2 kernel_size: 3 pad: 1 stride: 2", (2, 2, 5, 6)),
    ("Convolution", "num_output: 2 kernel_size: 2 dilation: 2 pad: 1", (1, 2, 5, 5)),
    ("Convolution", "num_output: 2 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 2 stride_h: 2 "
                    "stride_w: 1", (1, 2, 5, 3)),
    ("Convolution", "num_output: 2 kernel_size: 1 bias_term: false", (2, 3, 3, 2)),
    ("Convolution", "num_output: 4 kernel_size: 1 group: 2", (2, 6, 3, 2)),  # grouped 1x1
    ("Convolution", "num_output: 2 kernel_size: 2 kernel_size: 1 kernel_size: 2 stride: 2 "
                    "pad: 1", (1, 2, 3, 2, 3)),
    ("Convolution", "num_output: 2 kernel_size: 2 pad: 1 stride: 2", (2, 2, 5)),
    ("Convolution", "num_output: 2 kernel_size: 2 axis: 2", (2, 1, 2, 4, 3)),
    ("Convolution", "num_output: 3 kernel_size: 1", (2, 4)),   # no spatial axis
    ("Convolution", "num_output: 2 kernel_size: 2 pad: 1 stride: 2 group: 2",
     (1, 2, 2, 2, 2, 3)),   # 4 spatial axes: Caffe's im2col + gemm path
    ("Deconvolution", "num_output: 3 kernel_size: 3", (2, 2, 3, 2)),
    ("Deconvolution", "num_output: 4 kernel_size: 3 group: 2 stride: 2 pad: 1", (1, 2, 3, 3)),
    ("Deconvolution", "num_output: 2 kernel_size: 2 dilation: 2 bias_term: false", (1, 2, 3, 2)),
    ("Deconvolution", "num_output: 2 kernel_size: 2 stride: 2", (1, 2, 2, 2, 2)),
    ("Deconvolution", "num_output: 2 kernel_size: 2 stride: 2 pad: 1 group: 2",
     (1, 2, 2, 2, 2, 2)),
]


@pytest.mark.parametrize("kind,body,shape", CONV, ids=[f"{k}:{b}:{s}" for k, b, s in CONV])
def test_convolution_gradient(device, kind, body, shape):
    layer = make_layer(conv(kind, body), device=device)
    check_gradient(layer, [random_blob(shape, device=device)])


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_convolution_matches_torch(device, kind):
    layer = make_layer(conv(kind, "num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 2"),
                       device=device)
    x = random_blob((2, 2, 5, 4), device=device)
    top = setup(layer, [x])
    layer.forward([x], top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    fn = F.conv_transpose2d if kind == "Deconvolution" else F.conv2d
    expected = fn(x.data, w, b, stride=2, padding=1, groups=2)
    assert top[0].shape == tuple(expected.shape)
    torch.testing.assert_close(top[0].data, expected)


@pytest.mark.parametrize("num", [2, 40])   # 40: the batched weight-gradient path
def test_grouped_pointwise_convolution_matches_torch(device, num):
    """Grouped 1x1 convolutions (ShuffleNet's) run as one batched product per group."""
    layer = make_layer(conv("Convolution", "num_output: 6 kernel_size: 1 group: 3"),
                       device=device)
    x = random_blob((num, 9, 3, 2), device=device)
    top = setup(layer, [x])
    assert layer.pointwise
    layer.forward([x], top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    torch.testing.assert_close(top[0].data, F.conv2d(x.data, w, b, groups=3))
    top[0].diff[...] = torch.randn(top[0].shape, dtype=x.dtype, device=device)
    layer.backward(top, [True], [x])
    xr, wr, br = (t.clone().requires_grad_() for t in (x.data, w, b))
    F.conv2d(xr, wr, br, groups=3).backward(top[0].diff)
    for ours, theirs in ((x.diff, xr.grad), (layer.blobs[0].diff, wr.grad),
                         (layer.blobs[1].diff, br.grad)):
        torch.testing.assert_close(ours, theirs)


def test_depthwise_convolution_in_batch_chunks_equals_one_call(device, monkeypatch):
    """Grouped convolutions of large batches run a few images per kernel call (batch_chunk):
    the same numbers as one call over the batch, for chunks that do not divide it."""
    from caffe.layers import vision
    layer = make_layer(conv("Convolution", "num_output: 4 kernel_size: 3 pad: 1 stride: 2 "
                            "group: 4"), dtype=torch.float32, device=device)
    x = random_blob((5, 4, 7, 6), dtype=torch.float32, device=device)   # oneDNN's dtype
    top = setup(layer, [x])
    layer.forward([x], top)
    whole = top[0].data.clone()
    per_image = (4 * 7 * 6 + 4 * 4 * 3) * x.data.element_size()
    monkeypatch.setattr(vision, "GROUPED_CHUNK_BYTES", 2 * per_image)
    assert layer.batch_chunk() == 2
    top[0].data.zero_()
    layer.forward([x], top)
    torch.testing.assert_close(top[0].data, whole, rtol=1e-6, atol=1e-6)
    expected = F.conv2d(x.data, layer.blobs[0].data, layer.blobs[1].data, stride=2, padding=1,
                        groups=4)
    torch.testing.assert_close(top[0].data, expected)


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_gemm_path_matches_torch_path(device, kind):
    """Caffe's im2col + gemm formulation (used beyond 3 spatial axes) against torch's kernels."""
    body = "num_output: 4 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 dilation: 2 group: 2"
    layer = make_layer(conv(kind, body), device=device)
    x = random_blob((2, 2, 6, 5), device=device)
    top = setup(layer, [x])
    results = []
    for native in (True, False):
        layer.native = native
        layer.forward([x], top)
        top[0].diff.copy_(torch.linspace(-1, 1, top[0].count(), dtype=x.dtype).view(top[0].shape))
        for blob in layer.blobs:
            blob.diff.zero_()
        layer.backward(top, [True], [x])
        results.append([t.clone() for t in [top[0].data, x.diff] + [b.diff for b in layer.blobs]])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_convolution_shares_weights_across_bottoms(device):
    layer = make_layer(conv("Convolution", "num_output: 2 kernel_size: 2"), device=device)
    other = torch.Generator().manual_seed(3)
    bottom = [random_blob((1, 2, 3, 3), device=device),
              random_blob((1, 2, 3, 3), -2, 2, device=device, generator=other)]
    check_gradient(layer, bottom, num_tops=2)
    top = setup(layer, bottom, 2)
    layer.forward(bottom, top)
    diffs = []
    for i in range(2):
        for blob in layer.blobs:
            blob.diff.zero_()
        top[i].diff.fill_(1)
        top[1 - i].diff.zero_()
        layer.backward(top, [False, False], bottom)
        diffs.append(layer.blobs[0].diff.clone())
    top[0].diff.fill_(1)
    top[1].diff.fill_(1)
    layer.blobs[0].diff.zero_()
    layer.backward(top, [False, False], bottom)
    torch.testing.assert_close(layer.blobs[0].diff, diffs[0] + diffs[1])


def test_im2col_matches_unfold_and_is_adjoint_to_col2im(device):
    g = torch.Generator().manual_seed(5)
    geometry = ((2, 3, 2), (2, 1, 1), (1, 0, 1), (1, 2, 1))
    x = torch.rand((1, 2, 4, 6, 3), generator=g, dtype=torch.float64).to(device)
    out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                for n, (k, s, p, d) in zip(x.shape[2:], zip(*geometry)))
    col = im2col(x, *geometry, out)
    assert col.shape == (1, 2 * 12) + out
    # <im2col(x), y> = <x, col2im(y)>: col2im is the transpose, as Caffe's backward needs.
    y = torch.rand(col.shape, generator=g, dtype=torch.float64).to(device)
    lhs = (col * y).sum()
    rhs = (x * col2im(y, x.shape, *geometry, out)).sum()
    torch.testing.assert_close(lhs, rhs)
    # The generic N-D path, on a 2-D problem embedded in 3-D, is torch's unfold.
    x2 = x[:, :, :1]
    col2 = im2col(x2, (1, 3, 2), (1, 1, 1), (0, 0, 1), (1, 2, 1), (1, 2, 4))
    expected = F.unfold(x2[:, :, 0], (3, 2), (2, 1), (0, 1), 1).view(1, 12, 1, 2, 4)
    torch.testing.assert_close(col2, expected)


IM2COL = [
    ("kernel_size: 3 stride: 2 pad: 1", (1, 2, 5, 4)),
    ("kernel_h: 2 kernel_w: 3 dilation: 2 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2",
     (2, 1, 4, 6)),
    ("kernel_size: 2 stride: 2 pad: 1", (1, 2, 3, 2, 3)),
    ("kernel_size: 2 pad: 1 stride: 2", (2, 2, 5)),
]


@pytest.mark.parametrize("body,shape", IM2COL, ids=[b for b, _ in IM2COL])
def test_im2col_gradient(device, body, shape):
    layer = make_layer(f'type: "Im2col" convolution_param {{ {body} }}', device=device)
    check_gradient(layer, [random_blob(shape, device=device)])


# -- pooling: a literal transcription of Caffe's CPU loops -------------------------------------
def caffe_pool(x, method, k, s, p, ceil=True):
    """Caffe's forward (top, mask) and a function giving its backward, in NumPy loops."""
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    n, c, h, w = x.shape
    clip = bool(ph or pw)
    oh, ow = (pooled_length(h, kh, sh, ph, ceil, clip), pooled_length(w, kw, sw, pw, ceil, clip))
    top = np.zeros((n, c, oh, ow))
    mask = -np.ones((n, c, oh, ow), dtype=np.int64)
    sizes = np.zeros((oh, ow))
    windows = {}
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            sizes[i, j] = (h1 - h0) * (w1 - w0)
            windows[i, j] = (max(h0, 0), min(h1, h), max(w0, 0), min(w1, w))
    for a in range(n):
        for b in range(c):
            for (i, j), (h0, h1, w0, w1) in windows.items():
                if method == "MAX":
                    best = -FLT_MAX
                    for r in range(h0, h1):
                        for q in range(w0, w1):
                            if x[a, b, r, q] > best:
                                best, mask[a, b, i, j] = x[a, b, r, q], r * w + q
                    top[a, b, i, j] = best
                else:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        top[a, b, i, j] = x[a, b, h0:h1, w0:w1].sum() / sizes[i, j]

    def backward(dy):
        dx = np.zeros_like(x)
        sizes[sizes == 0] = np.nan   # only windows that hold no input have no size
        for a in range(n):
            for b in range(c):
                for (i, j), (h0, h1, w0, w1) in windows.items():
                    if method == "MAX":
                        if mask[a, b, i, j] >= 0:   # Caffe's GPU kernel skips a -1 mask
                            dx[a, b].flat[mask[a, b, i, j]] += dy[a, b, i, j]
                    else:
                        dx[a, b, h0:h1, w0:w1] += dy[a, b, i, j] / sizes[i, j]
        return dx
    return top, mask, backward


# (size, kernel, stride, pad, ceil): torch-equivalent ones and every kind that is not.
GEOMETRY = [
    ((6, 5), (2, 2), (2, 2), (0, 0), True),
    ((7, 6), (3, 3), (2, 2), (0, 0), True),    # ceil adds a partial window
    ((6, 5), (3, 3), (2, 2), (1, 1), True),
    ((5, 5), (2, 2), (2, 2), (1, 1), True),    # the last window would start in the padding
    ((5, 7), (3, 3), (2, 2), (2, 2), True),    # pad beyond half the kernel (torch refuses)
    ((5, 5), (1, 1), (3, 3), (0, 0), True),    # no pad: Caffe keeps a window beyond the input
    ((4, 5), (1, 2), (2, 3), (0, 0), True),    # ... one whose AVE divisor is zero
    ((5, 6), (2, 3), (3, 2), (0, 1), True),    # pad_w only: h is clipped as well
    ((9, 8), (3, 2), (3, 2), (2, 1), True),    # an SPP level
    ((6, 5), (3, 3), (1, 1), (0, 0), True),
    ((3, 4), (3, 4), (1, 1), (0, 0), True),    # global
    ((7, 6), (3, 3), (2, 2), (1, 1), False),   # round_mode FLOOR
    ((8, 7), (4, 3), (3, 2), (2, 1), False),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("size,k,s,p,ceil", GEOMETRY, ids=[str(g) for g in GEOMETRY])
def test_pooling_matches_caffe_loops(device, method, size, k, s, p, ceil):
    g = torch.Generator().manual_seed(11)
    x = torch.rand((2, 2) + size, generator=g, dtype=torch.float64) * 4 - 2
    top, mask, backward = caffe_pool(x.numpy(), method, k, s, p, ceil)
    pool = Pool2d(getattr(caffe_pb2.PoolingParameter, method), k, s, p, size, ceil)
    xd = x.to(device)
    y = pool.forward(xd, want_index=True)
    np.testing.assert_allclose(y.cpu().numpy(), top, rtol=1e-12, atol=1e-12, equal_nan=True)
    if method == "MAX":
        np.testing.assert_array_equal(pool.index.cpu().numpy(), mask)
    dy = torch.rand(y.shape, generator=g, dtype=torch.float64)
    dx = torch.full_like(xd, 7.0)   # backward must overwrite, not accumulate
    pool.backward(dy.to(device), xd, dx)
    np.testing.assert_allclose(dx.cpu().numpy(), backward(dy.numpy()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size,k,s,p,expected", [
    (5, 1, 3, 0, 3),    # torch's ceil mode drops the window starting at 6 > 5; Caffe keeps it
    (4, 1, 2, 0, 3),    # ... and here the kept window starts exactly at the end
    (6, 3, 2, 0, 3),    # the floor formula gives 2
    (5, 2, 2, 1, 3),    # plain ceil((5 + 2 - 2) / 2) + 1 = 4, but the last starts in the pad
    (7, 3, 3, 2, 3),    # 4 clipped: start 9 >= 7 + 2 (and torch refuses pad > kernel / 2)
    (9, 3, 3, 2, 4),
])
def test_pooled_output_size(size, k, s, p, expected):
    text = (f'type: "Pooling" pooling_param {{ pool: MAX kernel_h: {k} kernel_w: 1 '
            f'stride_h: {s} stride_w: 1 pad_h: {p} pad_w: 0 }}')
    layer = make_layer(text)
    top = setup(layer, [random_blob((1, 1, size, 3))])
    assert top[0].shape == (1, 1, expected, 3)
    floor = (size + 2 * p - k) // s + 1
    ceil = -(-(size + 2 * p - k) // s) + 1
    torch_ceil_mode = pooled_length(size, k, s, p, True, True)
    assert expected != floor or expected != ceil or expected != torch_ceil_mode


POOL = [
    ("pool: MAX kernel_size: 3 stride: 2", (1, 2, 7, 6)),
    ("pool: MAX kernel_size: 2 stride: 2 pad: 1", (2, 1, 5, 5)),
    ("pool: MAX kernel_size: 3 stride: 2 pad: 2", (1, 2, 5, 7)),
    ("pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2", (1, 2, 4, 7)),
    ("pool: MAX kernel_h: 3 kernel_w: 2 stride: 2 pad_h: 2 pad_w: 1", (1, 2, 5, 4)),
    ("pool: MAX global_pooling: true", (2, 2, 3, 4)),
    ("pool: MAX kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (1, 2, 7, 6)),
    ("pool: AVE kernel_size: 3 stride: 2", (1, 2, 7, 6)),
    ("pool: AVE kernel_size: 2 stride: 2 pad: 1", (2, 1, 5, 5)),
    ("pool: AVE kernel_size: 3 stride: 2 pad: 2", (1, 2, 5, 7)),
    ("pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 1", (1, 2, 6, 4)),
    ("pool: AVE global_pooling: true", (2, 2, 3, 4)),
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (1, 2, 7, 6)),
]


@pytest.mark.parametrize("body,shape", POOL, ids=[b for b, _ in POOL])
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_pooling_gradient(device, body, shape, phase):
    # TEST keeps no argmax in forward: backward must find it again.
    layer = make_layer(f'type: "Pooling" phase: {phase} pooling_param {{ {body} }}',
                       device=device)
    check_gradient(layer, [random_blob(shape, device=device)])


def test_pooling_mask_top(device):
    layer = make_layer('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }',
                       device=device)
    x = random_blob((1, 2, 4, 5), device=device)
    top = setup(layer, [x], 2)
    layer.forward([x], top)
    planes = x.data.view(2, -1)
    torch.testing.assert_close(planes.gather(1, top[1].data.view(2, -1).long()),
                               top[0].data.view(2, -1))
    assert top[1].dtype == x.dtype
    check_gradient(layer, [x], num_tops=2)


# -- stochastic pooling -------------------------------------------------------------------------
def stochastic(phase, device, body="kernel_size: 2 stride: 2"):
    return make_layer(f'type: "Pooling" phase: {phase} pooling_param {{ pool: STOCHASTIC {body} }}',
                      device=device)


def test_stochastic_pooling_samples_in_proportion(device):
    values = torch.tensor([[0.0, 1.0], [3.0, 4.0]], dtype=torch.float64)
    draws = 40000
    x = random_blob((1, draws, 2, 2), values=values.expand(1, draws, 2, 2).numpy(), device=device)
    layer = stochastic("TRAIN", device)
    top = setup(layer, [x])
    torch.manual_seed(1701)
    layer.forward([x], top)
    picked = top[0].data.view(-1).cpu()
    freq = torch.stack([(picked == v).double().mean() for v in values.view(-1)])
    expected = values.view(-1) / values.sum()
    # Four standard deviations of a proportion near 1/2 over 40000 draws: 0.01.
    assert freq[0] == 0 and torch.allclose(freq, expected, atol=0.01), (freq, expected)
    # The gradient goes to the sampled input only.
    top[0].diff.fill_(1)
    layer.backward(top, [True], [x])
    chosen = x.diff.view(draws, 4).cpu()
    assert torch.equal(chosen.sum(1), torch.ones(draws, dtype=torch.float64))
    torch.testing.assert_close((chosen * values.view(1, 4)).sum(1), picked)


def test_stochastic_pooling_test_phase_is_weighted_mean(device):
    x = random_blob((2, 3, 5, 4), 0.1, 2, device=device)
    layer = stochastic("TEST", device, "kernel_size: 3 stride: 2")
    top = setup(layer, [x])
    layer.forward([x], top)
    assert top[0].shape == (2, 3, 2, 2)   # ceil: partial windows at the far edges
    xp = F.pad(x.data, (0, 1, 0, 0))
    win = xp.unfold(2, 3, 2).unfold(3, 3, 2)
    expected = (win ** 2).sum((-1, -2)) / win.sum((-1, -2))
    torch.testing.assert_close(top[0].data, expected)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_stochastic_pooling_gradient(device, phase):
    layer = stochastic(phase, device, "kernel_size: 3 stride: 2")
    check_gradient(layer, [random_blob((1, 2, 5, 6), 0.5, 2, device=device)])


# -- LRN ------------------------------------------------------------------------------------------
LRN = [
    "local_size: 3",
    "local_size: 5 alpha: 0.5 beta: 0.75 k: 2",
    "local_size: 1 alpha: 2 beta: 1.5",
    "local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL",
    "local_size: 5 alpha: 1.5 beta: 0.6 k: 3 norm_region: WITHIN_CHANNEL",
]


@pytest.mark.parametrize("body", LRN)
def test_lrn_gradient(device, body):
    layer = make_layer(f'type: "LRN" lrn_param {{ {body} }}', device=device)
    check_gradient(layer, [random_blob((1, 7, 3, 4), -2, 2, device=device)])


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn_formula(device, region):
    x = random_blob((2, 5, 4, 3), -2, 2, device=device)
    layer = make_layer(f'type: "LRN" lrn_param {{ local_size: 3 alpha: 0.3 beta: 0.7 k: 1.5 '
                       f'norm_region: {region} }}', device=device)
    top = setup(layer, [x])
    layer.forward([x], top)
    sq = F.pad(x.data ** 2, (1, 1, 1, 1, 1, 1))
    if region == "ACROSS_CHANNELS":
        scale = 1.5 + 0.3 / 3 * sum(sq[:, c:c + 5, 1:-1, 1:-1] for c in range(3))
    else:   # Caffe's power layer shifts by 1, not k
        scale = 1 + 0.3 / 9 * sum(sq[:, 1:-1, i:i + 4, j:j + 3] for i in range(3) for j in range(3))
    torch.testing.assert_close(top[0].data, x.data * scale ** -0.7)


# -- SPP ------------------------------------------------------------------------------------------
SPP = [("pyramid_height: 1 pool: MAX", (2, 2, 5, 4), (2, 2, 1, 1)),
       ("pyramid_height: 2 pool: AVE", (1, 2, 5, 7), (1, 10)),
       ("pyramid_height: 3 pool: MAX", (1, 2, 9, 8), (1, 42)),
       ("pyramid_height: 3 pool: AVE", (1, 1, 9, 8), (1, 21))]


@pytest.mark.parametrize("body,shape,top_shape", SPP, ids=[b for b, _, _ in SPP])
def test_spp_gradient(device, body, shape, top_shape):
    layer = make_layer(f'type: "SPP" spp_param {{ {body} }}', device=device)
    x = random_blob(shape, device=device)
    assert setup(layer, [x])[0].shape == top_shape
    check_gradient(layer, [x])


def test_spp_concatenates_pooled_levels(device):
    x = random_blob((2, 3, 8, 8), device=device)
    layer = make_layer('type: "SPP" spp_param { pyramid_height: 3 pool: MAX }', device=device)
    top = setup(layer, [x])
    layer.forward([x], top)
    expected = torch.cat([F.adaptive_max_pool2d(x.data, b).flatten(1) for b in (1, 2, 4)], 1)
    torch.testing.assert_close(top[0].data, expected)


# -- bad parameters -------------------------------------------------------------------------------
BAD = [
    (conv("Convolution", "num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3"), "not both"),
    ('type: "Pooling" pooling_param { kernel_size: 3 kernel_h: 3 kernel_w: 3 }', "not both"),
    ('type: "Pooling" pooling_param { kernel_size: 3 kernel_h: 2 }', "not both"),
    ('type: "Pooling" pooling_param { kernel_h: 2 }', "kernel_h"),
    (conv("Convolution", "num_output: 2 kernel_size: 3 group: 4"), "group"),
    (conv("Convolution", "num_output: 3 kernel_size: 3 group: 2"), "group"),
    (conv("Deconvolution", "num_output: 3 kernel_size: 3 group: 2"), "group"),
    (conv("Convolution", "num_output: 2 kernel_size: 3 stride: 0"), "stride"),
    (conv("Convolution", "num_output: 2 kernel_size: 3 stride_h: 1"), "stride"),
    (conv("Convolution", "num_output: 0 kernel_size: 3"), "num_output"),
    (conv("Convolution", "num_output: 2"), "kernel_size"),
    (conv("Convolution", "num_output: 2 kernel_size: 1 kernel_size: 2 kernel_size: 3"),
     "kernel_size"),
    (conv("Convolution", "num_output: 2 kernel_size: 9"), "exceeds"),
    ('type: "Im2col" convolution_param { kernel_size: 2 stride: 0 }', "stride"),
    ('type: "Pooling" pooling_param { kernel_size: 3 stride: 0 }', "stride"),
    ('type: "Pooling" pooling_param { kernel_size: 3 pad: 3 }', "pad"),
    ('type: "Pooling" pooling_param { kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 2 }', "pad"),
    ('type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 3 pad: 1 }', "pad"),
    ('type: "Pooling" pooling_param { global_pooling: true kernel_size: 2 }', "global"),
    ('type: "Pooling" pooling_param { global_pooling: true stride: 2 }', "global"),
    ('type: "Pooling" pooling_param { kernel_size: 9 }', "larger"),
    ('type: "LRN" lrn_param { local_size: 4 }', "odd"),
    ('type: "SPP" spp_param { pool: MAX }', "pyramid_height"),
    ('type: "SPP" spp_param { pyramid_height: 4 }', "too small"),
]


@pytest.mark.parametrize("text,words", BAD, ids=[t for t, _ in BAD])
def test_bad_parameters_fail_at_setup(text, words):
    layer = make_layer(text)
    with pytest.raises(LayerSetupError, match=words) as err:
        setup(layer, [random_blob((1, 4, 6, 5))])
    assert "'layer'" in str(err.value) and layer.type in str(err.value)


def test_pooling_mask_top_needs_max():
    layer = make_layer('type: "Pooling" pooling_param { pool: AVE kernel_size: 2 }')
    with pytest.raises(LayerSetupError, match="mask"):
        setup(layer, [random_blob((1, 1, 4, 4))], 2)


def test_loaded_weights_of_wrong_shape_fail():
    layer = make_layer(conv("Convolution", "num_output: 2 kernel_size: 3"))
    layer.blobs = [Blob((2, 4, 2, 2), torch.float64), Blob((2,), torch.float64)]
    with pytest.raises(LayerSetupError, match="shape"):
        setup(layer, [random_blob((1, 4, 6, 5))])
