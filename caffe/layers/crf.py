"""DeepLab's fully connected CRF as a layer (PSPNet / DeepLab v2's DenseCRF), on the CPU.

Mean-field inference of Krähenbühl and Koltun's dense CRF with Potts compatibility: Q starts
as softmax(scores); each of max_iter steps sets Q = softmax(scores + sum_k w_k n_k (k_k * Q)),
k_k a Gaussian kernel over positions (pos_*) or positions and colours (bi_*, from the image
bottom), applied with the permutohedral lattice, n_k the per-pixel normalisation 1 / (k_k * 1).
The exponentials are the fork's fast_exp approximation, so that Q matches its numbers.
"""
import numpy as np
import torch

from ..layer import Layer, register_layer
from .permutohedral import Permutohedral

F32 = np.float32
FLT_MIN = np.finfo(F32).tiny


def _very_fast_exp(x):
    """The fork's degree-7 polynomial for exp(-x), 0 <= x <= 0.69, in float32 Horner form."""
    c = [F32(v) for v in (0.0001413161, 0.0013298820, 0.0083013598, 0.0416573475,
                          0.1666653019, 0.4999999206, 0.9999999995)]
    acc = c[0]
    for k in c[1:]:
        acc = k - x * acc
    return F32(1) - x * acc


def fast_exp(x):
    """densecrf_util.hpp's fast_exp, elementwise: 0 beyond |x| > 20 (its inputs are <= 0),
    otherwise exp(-|x|) by halving |x| into [0, 0.69], the polynomial, and squaring back."""
    x = np.asarray(x, F32)
    positive = x >= 0
    a = np.abs(x)
    mult = np.zeros(a.shape, np.int64)
    for limit, factor, step in ((0.69 * 8, 8, 3), (0.69 * 4, 4, 2), (0.69, 2, 1)):
        while True:
            more = a.astype(np.float64) > limit
            more &= a <= 20
            if not more.any():
                break
            a = np.where(more, a / F32(factor), a)
            mult += np.where(more, step, 0)
    e = _very_fast_exp(a)
    for _ in range(int(mult.max(initial=0))):
        square = mult > 0
        e = np.where(square, e * e, e)
        mult -= square
    e = np.where(positive, F32(1) / e, e)
    return np.where(np.abs(x) > 20, F32(0), e).astype(F32)


def exp_normalize(values, scale):
    """The fork's ExpAndNormalize: softmax over the last axis with fast_exp."""
    b = F32(scale) * values
    v = fast_exp(b - b.max(axis=1, keepdims=True))
    total = np.zeros(len(v), F32)
    for j in range(v.shape[1]):      # the fork's sequential sum
        total += v[:, j]
    return v / total[:, None]


@register_layer
class DenseCRFLayer(Layer):
    """Bottoms: scores (N x M x H x W, after upsampling), each image's size (N x 1 x 1 x 2:
    height, width; a smaller size limits the CRF to that corner), optionally the image
    (N x 3 x H x W, for the bilateral kernels). Top: Q (output_probability) or log Q; 0
    outside the image's size. No backward (the fork has none). Each item uses its own
    image; the fork reads item 0's image for every item of a batch (and needs the image
    bottom: with two bottoms it crashes), which this layer does not copy."""

    type = "DenseCRF"
    min_bottom_blobs = 2
    max_bottom_blobs = 3
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.dense_crf_param
        if len(p.pos_w) != len(p.pos_xy_std):
            self.fail("pos_w and pos_xy_std must have the same size")
        if not (len(p.bi_w) == len(p.bi_xy_std) == len(p.bi_rgb_std)):
            self.fail("bi_w, bi_xy_std and bi_rgb_std must have the same size")
        if len(bottom) == 3 and (not len(p.bi_w) or bottom[2].shape[1] != 3):
            self.fail("with an image bottom give bilateral parameters; the image must be colour")

    def reshape(self, bottom, top):
        if tuple(bottom[1].shape[:1]) != tuple(bottom[0].shape[:1]) or bottom[1].count() < \
                2 * bottom[0].shape[0]:
            self.fail(f"the size bottom {tuple(bottom[1].shape)} must hold (height, width) per "
                      f"item of {tuple(bottom[0].shape)}")
        if len(bottom) == 3 and tuple(bottom[2].shape[2:]) != tuple(bottom[0].shape[2:]):
            self.fail(f"image {tuple(bottom[2].shape)} and scores {tuple(bottom[0].shape)} "
                      "must have the same height and width")
        top[0].reshape_like(bottom[0])

    def kernels(self, image, h, w):
        p = self.param.dense_crf_param
        cols, rows = np.meshgrid(np.arange(w, dtype=F32), np.arange(h, dtype=F32))
        out = []
        for weight, std in zip(p.pos_w, p.pos_xy_std):
            f = np.stack([cols / F32(std), rows / F32(std)], -1).reshape(-1, 2)
            out.append((F32(weight), f))
        if image is not None:
            rgb = image[:, :h, :w].astype(F32)
            for weight, xy, c in zip(p.bi_w, p.bi_xy_std, p.bi_rgb_std):
                f = np.stack([cols / F32(xy), rows / F32(xy)] +
                             [rgb[k] / F32(c) for k in range(3)], -1).reshape(-1, 5)
                out.append((F32(weight), f))
        return out

    def infer(self, scores, image, h, w):
        """Q (h * w x M) for one item's scores (M x H x W)."""
        m = scores.shape[0]
        unary = -scores[:, :h, :w].reshape(m, -1).T.astype(F32)
        potentials = []
        for weight, f in self.kernels(image, h, w):
            lattice = Permutohedral(f)
            norm = F32(1) / (lattice.compute(np.ones((h * w, 1), F32))[:, 0] + F32(1e-20))
            potentials.append((lattice, weight * norm))
        q = exp_normalize(unary, -1.0)
        for _ in range(self.param.dense_crf_param.max_iter):
            nxt = -unary
            for lattice, wn in potentials:
                nxt = nxt + wn[:, None] * lattice.compute(q)
            q = exp_normalize(nxt, 1.0)
        return q

    def forward(self, bottom, top):
        scores = bottom[0].data.detach().cpu().numpy()
        dims = bottom[1].data.detach().cpu().numpy().reshape(len(scores), -1)
        image = bottom[2].data.detach().cpu().numpy() if len(bottom) == 3 else None
        pad_h, pad_w = scores.shape[2:]
        out = np.zeros(scores.shape, F32)
        for n in range(len(scores)):
            real_h, real_w = int(dims[n, 0]), int(dims[n, 1])
            h, w = (pad_h, pad_w) if pad_h <= real_h and pad_w <= real_w else (real_h, real_w)
            q = self.infer(scores[n], None if image is None else image[n], h, w)
            if not self.param.dense_crf_param.output_probability:
                q = np.log(np.maximum(q, FLT_MIN))
            out[n, :, :h, :w] = q.T.reshape(-1, h, w)
        top[0].data[...] = torch.from_numpy(out).to(top[0].data)
