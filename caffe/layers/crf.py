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


def _softmax_backward(prob, dprob):
    """d in = prob * (d prob - sum_c prob d prob), over the channel axis 0."""
    return prob * (dprob - (prob * dprob).sum(axis=0, keepdims=True))


@register_layer
class MultiStageMeanfieldLayer(Layer):
    """CRF-RNN (torrvision/caffe): num_iterations mean-field steps as one layer.

    Bottoms: unaries U (N x C x H x W), the first step's input (usually U again), the image
    (N x 3 x H x W). Step t: P = softmax(in_t); S = k_s * P, B = k_b * P (permutohedral
    Gaussians over (x, y) / theta_gamma and (x, y) / theta_alpha, rgb / theta_beta, each
    normalised per pixel); out_t = U - Comp (W_s S + W_b B); in_{t+1} = out_t; top = out_T.
    Blobs (1 x 1 x C x C): W_s, W_b, Comp; new ones are spatial_filter_weight and
    bilateral_filter_weight on the diagonal (the fork reads them from spatial.par and
    bilateral.par in the working folder) and Comp = -I (Potts). Backward as the fork: to U
    (summed over the steps), to the first input, and the three blobs (their diffs are
    overwritten with the sum over the steps); the lattices' transposes blur in reverse order.
    """

    type = "MultiStageMeanfield"
    exact_num_bottom_blobs = 3
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.multi_stage_meanfield_param
        if p.num_iterations <= 1:
            self.fail(f"num_iterations must be greater than 1, got {p.num_iterations}")
        c = bottom[0].shape[1]
        if bottom[2].shape[1] != 3:
            self.fail(f"the image bottom must have 3 channels, got {bottom[2].shape[1]}")
        if not self.blobs:
            eye = torch.eye(c, dtype=self.dtype, device=self.device)
            self.blobs = [self.new_blob((1, 1, c, c)) for _ in range(3)]
            self.blobs[0].data[0, 0] = eye * p.spatial_filter_weight
            self.blobs[1].data[0, 0] = eye * p.bilateral_filter_weight
            self.blobs[2].data[0, 0] = -eye

    def reshape(self, bottom, top):
        n, c, h, w = bottom[0].shape
        if any(tuple(b.shape) != (n, c, h, w) for b in bottom[:2]) or \
                tuple(bottom[2].shape) != (n, 3, h, w):
            self.fail(f"bottoms must be N x C x H x W twice and N x 3 x H x W, got "
                      f"{[tuple(b.shape) for b in bottom]}")
        p = self.param.multi_stage_meanfield_param
        if getattr(self, "_size", None) != (h, w):
            self._size = (h, w)
            self.spatial = Permutohedral(self._positions(h, w, p.theta_gamma))
            self.spatial_norm = self._norm(self.spatial)
        top[0].reshape_like(bottom[0])

    @staticmethod
    def _positions(h, w, theta):
        pix = np.arange(h * w)
        return np.stack([(pix % w).astype(F32) / F32(theta),
                         (pix // w).astype(F32) / F32(theta)], 1)

    @staticmethod
    def _norm(lattice):
        return F32(1) / (lattice.compute(np.ones((lattice.n, 1), F32))[:, 0] + F32(1e-20))

    def forward(self, bottom, top):
        p = self.param.multi_stage_meanfield_param
        h, w = self._size
        dt = np.float64 if self.dtype == torch.float64 else F32
        unary = bottom[0].data.detach().cpu().numpy().astype(dt)
        x = bottom[1].data.detach().cpu().numpy().astype(dt)
        image = bottom[2].data.detach().cpu().numpy().reshape(len(unary), 3, -1)
        ws, wb, comp = (b.data.detach().cpu().numpy()[0, 0].astype(dt) for b in self.blobs)
        self.steps, out = [], np.empty_like(unary)
        for n in range(len(unary)):
            rgb = (image[n] / dt(p.theta_beta)).astype(F32)
            lattice = Permutohedral(np.concatenate(
                [self._positions(h, w, p.theta_alpha), rgb.T], 1))
            norms = (self.spatial_norm.astype(dt), self._norm(lattice).astype(dt))
            u, cur, steps = unary[n].reshape(len(ws), -1), x[n].reshape(len(ws), -1), []
            for _ in range(p.num_iterations):
                e = np.exp(cur - cur.max(axis=0, keepdims=True))
                prob = e / e.sum(axis=0, keepdims=True)
                s = self.spatial.compute(prob.T).T * norms[0]
                b = lattice.compute(prob.T).T * norms[1]
                msg = ws @ s + wb @ b
                cur = u - comp @ msg
                steps.append((prob, s, b, msg))
            self.steps.append((lattice, norms, steps))
            out[n] = cur.reshape(out[n].shape)
        top[0].data[...] = torch.from_numpy(out).to(top[0].data)

    def backward(self, top, propagate_down, bottom):
        dt = np.float64 if self.dtype == torch.float64 else F32
        ws, wb, comp = (b.data.detach().cpu().numpy()[0, 0].astype(dt) for b in self.blobs)
        grads = [np.zeros_like(ws) for _ in range(3)]
        dy = top[0].diff.detach().cpu().numpy().astype(dt)
        d_unary, d_first = np.zeros_like(dy), np.zeros_like(dy)
        for n, (lattice, norms, steps) in enumerate(self.steps):
            dout = dy[n].reshape(len(ws), -1)
            du = np.zeros_like(dout)
            for prob, s, b, msg in reversed(steps):
                du += dout
                dpair = -dout
                grads[2] += dpair @ msg.T
                dmsg = comp.T @ dpair
                grads[0] += dmsg @ s.T
                grads[1] += dmsg @ b.T
                ds, db = (ws.T @ dmsg) * norms[0], (wb.T @ dmsg) * norms[1]
                dprob = self.spatial.compute(ds.T, reverse=True).T + \
                    lattice.compute(db.T, reverse=True).T
                dout = _softmax_backward(prob, dprob)
            d_unary[n], d_first[n] = du.reshape(dy[n].shape), dout.reshape(dy[n].shape)
        for i, (blob, g) in enumerate(zip(self.blobs, grads)):
            if self.param_propagate_down[i]:
                blob.diff[0, 0] = torch.from_numpy(g).to(blob.diff)
        for i, g in ((0, d_unary), (1, d_first)):
            if propagate_down[i]:
                bottom[i].diff[...] = torch.from_numpy(g).to(bottom[i].diff)
