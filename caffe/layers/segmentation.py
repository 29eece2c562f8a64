"""Semantic segmentation layers of the forks: DeepLab v2 / PSPNet (hszhao/PSPNet) and SegNet.

Interp (bilinear resize, corners aligned), BN (two forks, two meanings: see BNLayer),
Upsample (SegNet's max-unpooling by pooling masks; YOLO v3 ports' nearest-neighbour with one
bottom) and SegAccuracy.
"""
import torch

from ..layer import Layer, register_layer
from ..proto import caffe_pb2


def interp_matrix(size_in, size_out, dtype, device):
    """A (size_out, size_in) matrix of PSPNet's caffe_cpu_interp2 weights along one axis.

    Source position h2 * (in - 1) / (out - 1), with the ratio in float32 as the fork has it;
    a 1-pixel output reads pixel 0, equal sizes copy.
    """
    if size_in == size_out:
        return torch.eye(size_out, dtype=dtype, device=device)
    ratio = torch.tensor((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0,
                         dtype=torch.float32)
    pos = ratio * torch.arange(size_out, dtype=torch.float32)
    low = pos.to(torch.int64)
    frac = (pos - low.to(torch.float32)).to(dtype)
    high = torch.where(low < size_in - 1, low + 1, low)
    m = torch.zeros(size_out, size_in, dtype=dtype)
    rows = torch.arange(size_out)
    m.index_put_((rows, low), 1 - frac, accumulate=True)
    m.index_put_((rows, high), frac, accumulate=True)
    return m.to(device)


@register_layer
class InterpLayer(Layer):
    """y = A_h x[crop] A_w^T: bilinear resize with corners aligned, after cropping -pad_beg
    rows/columns before and -pad_end after (pads must be <= 0). Output size from zoom_factor
    (in + (in - 1)(z - 1)), shrink_factor ((in - 1) / s + 1), both, or height and width."""

    type = "Interp"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.interp_param
        if p.pad_beg > 0 or p.pad_end > 0:
            self.fail("only supports non-positive padding (cropping): "
                      f"pad_beg {p.pad_beg}, pad_end {p.pad_end}")

    def out_size(self, size):
        p = self.param.interp_param
        zoom, shrink = p.HasField("zoom_factor"), p.HasField("shrink_factor")
        if (zoom and p.zoom_factor < 1) or (shrink and p.shrink_factor < 1):
            self.fail("zoom_factor and shrink_factor must be positive")
        if shrink:
            size = (size - 1) // p.shrink_factor + 1
        if zoom:
            return size + (size - 1) * (p.zoom_factor - 1)
        if shrink:
            return size
        if p.HasField("height") and p.HasField("width"):
            return None
        self.fail("interp_param needs zoom_factor, shrink_factor, or height and width")

    def reshape(self, bottom, top):
        p = self.param.interp_param
        if bottom[0].num_axes != 4:
            self.fail(f"needs a 4-D bottom, got shape {tuple(bottom[0].shape)}")
        n, c, h, w = bottom[0].shape
        self.crop = (-p.pad_beg, h + p.pad_end, -p.pad_beg, w + p.pad_end)
        h_in, w_in = self.crop[1] - self.crop[0], self.crop[3] - self.crop[2]
        h_out, w_out = self.out_size(h_in), self.out_size(w_in)
        if h_out is None:
            h_out, w_out = p.height, p.width
        if min(h_in, w_in, h_out, w_out) <= 0:
            self.fail(f"input {h_in}x{w_in} after cropping and output {h_out}x{w_out} "
                      "must be positive")
        self.a_h = interp_matrix(h_in, h_out, self.dtype, self.device)
        self.a_w = interp_matrix(w_in, w_out, self.dtype, self.device)
        top[0].reshape((n, c, h_out, w_out))

    def forward(self, bottom, top):
        y0, y1, x0, x1 = self.crop
        top[0].data[...] = self.a_h @ bottom[0].data[:, :, y0:y1, x0:x1] @ self.a_w.T

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y0, y1, x0, x1 = self.crop
        bottom[0].diff.zero_()
        bottom[0].diff[:, :, y0:y1, x0:x1] = self.a_h.T @ top[0].diff @ self.a_w


def _channel_mean(t):
    return t.mean(dim=(0, 2, 3), keepdim=True)


@register_layer
class BNLayer(Layer):
    """y = scale * (x - mean) / sqrt(var + eps) + shift, per channel, in two forks' forms.

    PSPNet: blobs slope, bias, running mean, running variance (1 x C x 1 x 1); TRAIN uses
    the batch's statistics (biased variance) and updates the running ones with
    r = momentum * r + (1 - momentum) * batch; TEST or frozen uses the running ones.
    SegNet: blobs scale, shift; LEARN always uses the batch's statistics (eps 1e-9, optional
    tops 1 and 2: batch mean and variance); INFERENCE is y = scale * x + shift (SegNet's
    compute_bn_statistics.py folds the statistics into scale and shift).
    A layer is SegNet's when bn_param sets bn_mode, scale_filler or shift_filler (a SegNet
    binary file always sets bn_mode), or, with none of PSPNet's fields set, when it loads
    two blobs.
    """

    type = "BN"
    exact_num_bottom_blobs = 1
    min_top_blobs = 1
    max_top_blobs = 3

    def setup(self, bottom, top):
        p = self.param.bn_param
        psp_fields = ("slope_filler", "bias_filler", "momentum", "eps", "frozen", "engine")
        self.segnet = any(p.HasField(f) for f in ("bn_mode", "scale_filler", "shift_filler")) \
            or (len(self.blobs) == 2 and not any(p.HasField(f) for f in psp_fields))
        if len(top) > 1 and not self.segnet:
            self.fail("PSPNet's BN has one top (SegNet's may add the batch mean and variance)")
        channels = bottom[0].shape[1]
        want = 2 if self.segnet else 4
        if self.blobs and (len(self.blobs) != want or
                           any(b.count() != channels for b in self.blobs)):
            self.fail(f"expects {want} blobs of {channels} values, got "
                      f"{[tuple(b.shape) for b in self.blobs]}")
        if not self.blobs:
            shape = (1, channels, 1, 1)
            if self.segnet:
                self.blobs = [self.new_blob(shape, p.scale_filler),
                              self.new_blob(shape, p.shift_filler)]
            else:
                self.blobs = [self.new_blob(shape, p.slope_filler),
                              self.new_blob(shape, p.bias_filler),
                              self.new_blob(shape), self.new_blob(shape)]
                if p.frozen:
                    self.blobs[3].data.fill_(1)
        if not self.segnet:
            # As the fork: the statistics (and, frozen, everything) are not learned.
            while len(self.param.param) < 4:
                self.param.param.add()
            for i in (0, 1, 2, 3) if p.frozen else (2, 3):
                self.param.param[i].lr_mult = 0
                self.param.param[i].decay_mult = 0

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            self.fail(f"needs a 4-D bottom, got shape {tuple(bottom[0].shape)}")
        top[0].reshape_like(bottom[0])
        for t in top[1:]:
            t.reshape((1, bottom[0].shape[1], 1, 1))

    @property
    def uses_batch(self):
        p = self.param.bn_param
        if self.segnet:
            return p.bn_mode == caffe_pb2.BNParameter.LEARN
        return not p.frozen and self.phase == caffe_pb2.TRAIN

    def forward(self, bottom, top):
        p, x = self.param.bn_param, bottom[0].data
        scale, shift = self.blobs[0].data, self.blobs[1].data
        if self.segnet and not self.uses_batch:
            top[0].data[...] = scale * x + shift
            return
        if self.uses_batch:
            mean = _channel_mean(x)
            var = _channel_mean(x * x) - mean * mean if self.segnet else \
                _channel_mean((x - mean) ** 2)
            if self.segnet:
                for t, v in zip(top[1:], (mean, var)):
                    t.data[...] = v
            else:
                for blob, v in ((self.blobs[2], mean), (self.blobs[3], var)):
                    blob.data.mul_(p.momentum).add_((1 - p.momentum) * v)
        else:
            mean, var = self.blobs[2].data, self.blobs[3].data
        self.inv_std = (var + (1e-9 if self.segnet else p.eps)) ** -0.5
        self.x_norm = (x - mean) * self.inv_std
        top[0].data[...] = scale * self.x_norm + shift

    def backward(self, top, propagate_down, bottom):
        dy, scale = top[0].diff, self.blobs[0].data
        if self.segnet and not self.uses_batch:
            x_norm = bottom[0].data
        elif not self.segnet and self.param.bn_param.frozen:
            if propagate_down[0]:
                bottom[0].diff[...] = dy * scale * self.inv_std
            return
        else:
            x_norm = self.x_norm
        for i, v in ((0, x_norm * dy), (1, dy)):
            if self.param_propagate_down[i]:
                grad = v.sum(dim=(0, 2, 3), keepdim=True)
                # SegNet's BN overwrites its parameter diffs; PSPNet's accumulates.
                if self.segnet:
                    self.blobs[i].diff[...] = grad
                else:
                    self.blobs[i].diff.add_(grad)
        if not propagate_down[0]:
            return
        g = dy * scale
        if self.segnet and not self.uses_batch:
            bottom[0].diff[...] = g
            return
        # The fork's formula in every phase (TEST too, with the running statistics).
        bottom[0].diff[...] = self.inv_std * (g - _channel_mean(g) -
                                              x_norm * _channel_mean(g * x_norm))


@register_layer
class UpsampleLayer(Layer):
    """Two bottoms (SegNet): y[mask[i]] = x[i] per channel, 0 elsewhere (max-unpooling by the
    indices a Pooling layer's second top gives); output upsample_h x upsample_w, or
    in x scale minus pad_out. One bottom (YOLO v3 ports): nearest neighbour, each value
    repeated scale x scale times."""

    type = "Upsample"
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.upsample_param
        self.unpool = len(bottom) == 2
        if p.HasField("upsample_h") and p.HasField("upsample_w"):
            if p.upsample_h <= 1 or p.upsample_w <= 1:
                self.fail("upsample_h and upsample_w must be greater than 1")
            self.scales = None
        elif p.HasField("scale_h") != p.HasField("scale_w") or \
                (p.HasField("scale") and p.HasField("scale_h")):
            self.fail("give upsample_h and upsample_w, or scale, or scale_h and scale_w")
        else:
            self.scales = (p.scale_h, p.scale_w) if p.HasField("scale_h") else (p.scale,) * 2
            if min(self.scales) < (2 if self.unpool else 1):
                self.fail(f"scale must be at least 2, got {self.scales}")
            for pad, s in zip((p.pad_out_h, p.pad_out_w), self.scales):
                if pad and s != 2:
                    self.fail("pad_out_h / pad_out_w need a scale of 2")
        if not self.unpool and self.scales is None:
            self.fail("with one bottom (nearest neighbour) give scale, not upsample_h/_w")

    def reshape(self, bottom, top):
        p, x = self.param.upsample_param, bottom[0]
        if x.num_axes != 4:
            self.fail(f"needs a 4-D bottom, got shape {tuple(x.shape)}")
        if self.unpool and tuple(bottom[1].shape) != tuple(x.shape):
            self.fail(f"mask shape {tuple(bottom[1].shape)} differs from {tuple(x.shape)}")
        if self.scales is None:
            self.out = (p.upsample_h, p.upsample_w)
        else:
            self.out = (x.shape[2] * self.scales[0] - int(p.pad_out_h and self.unpool),
                        x.shape[3] * self.scales[1] - int(p.pad_out_w and self.unpool))
        top[0].reshape(tuple(x.shape[:2]) + self.out)

    def indices(self, bottom):
        idx = bottom[1].data.reshape(bottom[1].shape[0], bottom[1].shape[1], -1).long()
        size = self.out[0] * self.out[1]
        if idx.numel() and (idx.min() < 0 or idx.max() >= size):
            self.fail(f"mask index {int(idx.max())} out of range for a {self.out[0]}x"
                      f"{self.out[1]} output: check the scale against the pooling layer's")
        return idx

    def forward(self, bottom, top):
        x = bottom[0].data
        if not self.unpool:
            top[0].data[...] = x.repeat_interleave(self.scales[0], 2) \
                .repeat_interleave(self.scales[1], 3)
            return
        y = top[0].data.view(x.shape[0], x.shape[1], -1)
        y.zero_()
        y.scatter_(2, self.indices(bottom), x.reshape(x.shape[0], x.shape[1], -1))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, n, c = top[0].diff, bottom[0].shape[0], bottom[0].shape[1]
        if not self.unpool:
            sh, sw = self.scales
            bottom[0].diff[...] = dy.reshape(n, c, dy.shape[2] // sh, sh, dy.shape[3] // sw,
                                             sw).sum(dim=(3, 5))
            return
        flat = dy.reshape(n, c, -1)
        bottom[0].diff[...] = flat.gather(2, self.indices(bottom)).view_as(bottom[0].diff)


@register_layer
class SegAccuracyLayer(Layer):
    """(pixel accuracy, mean class recall, mean IoU) of argmax predictions against a label
    map (N x 1 x H x W), from a confusion matrix kept across calls unless reset. Labels in
    ignore_label are skipped; ties go to the highest class, as the fork's partial_sort."""

    type = "SegAccuracy"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        self.ignore = set(self.param.seg_accuracy_param.ignore_label)
        self.confusion = torch.zeros(bottom[0].shape[1], bottom[0].shape[1],
                                     dtype=torch.float64)

    def reshape(self, bottom, top):
        x, label = bottom[0], bottom[1]
        if label.num_axes != 4 or label.shape[1] != 1 or label.shape[0] != x.shape[0] or \
                tuple(label.shape[2:]) != tuple(x.shape[2:]):
            self.fail(f"label shape {tuple(label.shape)} must be N x 1 x H x W of the data's "
                      f"{tuple(x.shape)}")
        top[0].reshape((1, 1, 1, 3))

    def forward(self, bottom, top):
        classes = bottom[0].shape[1]
        if self.param.seg_accuracy_param.reset:
            self.confusion.zero_()
        pred = classes - 1 - bottom[0].data.flip(1).argmax(1).flatten()
        label = bottom[1].data.flatten().long()
        keep = ~torch.isin(label, torch.tensor(sorted(self.ignore), dtype=torch.int64,
                                                device=label.device))
        pred, label = pred[keep], label[keep]
        if label.numel() and (label.min() < 0 or label.max() >= classes):
            bad = int(label.max() if label.max() >= classes else label.min())
            self.fail(f"unexpected label {bad} for {classes} classes")
        self.confusion += torch.bincount(label.cpu() * classes + pred.cpu(),
                                         minlength=classes * classes).view(classes, classes)
        m = self.confusion
        diag, rows, cols, total = m.diag(), m.sum(1), m.sum(0), m.sum()
        accuracy = diag.sum() / total if total > 0 else torch.tensor(0.0)
        seen = rows > 0
        recall = (diag[seen] / rows[seen]).mean() if seen.any() else torch.tensor(0.0)
        union = rows + cols - diag
        iou = torch.where(diag == union, torch.ones_like(diag), diag / union).mean()
        top[0].data[...] = torch.stack([accuracy, recall, iou]).view(1, 1, 1, 3)
