"""Normalization layers: Softmax, MVN (mean-variance normalization), BatchNorm and LRN
(local response normalization)."""
import torch
import torch.nn.functional as F

from ..layer import Hints, Layer, Step, register_layer
from ..proto import caffe_pb2
from .pooling import check_4d


class _OneToOne(Layer):
    """One bottom, one top of the same shape."""

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])


@register_layer
class SoftmaxLayer(_OneToOne):
    """y = exp(x) / sum_axis exp(x), along softmax_param.axis. Safe in place."""

    type = "Softmax"

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis_index(self.param.softmax_param.axis)
        super().reshape(bottom, top)

    def forward(self, bottom, top):
        # Caffe's steps (subtract the max, exp, normalise); torch.softmax on small CPU tensors
        # enters a parallel region per call that stalls for milliseconds on a busy machine.
        x = bottom[0].data
        e = torch.exp(x - x.amax(self.axis, keepdim=True))
        top[0].data[...] = e / e.sum(self.axis, keepdim=True)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, dy = top[0].data, top[0].diff
            bottom[0].diff[...] = y * (dy - (dy * y).sum(self.axis, keepdim=True))


def mvn(x, rows, p):
    """MVN's maths (MVNParameter p) over x seen as `rows` rows: (y, std + eps per row, or None
    without normalize_variance). The layer and the torch exporter use it."""
    v = x.reshape(rows, -1)
    y = v - v.mean(1, keepdim=True)
    std = None
    if p.normalize_variance:
        # Caffe adds eps to the standard deviation, not to the variance.
        std = torch.sqrt((y * y).mean(1, keepdim=True)) + p.eps
        y = y / std
    return y.reshape(x.shape), std


@register_layer
class MVNLayer(_OneToOne):
    """y = (x - mean) / (std + eps) per sample and channel (or per sample across channels)."""

    type = "MVN"

    def groups(self, blob):
        # Caffe's legacy num()/channels(): statistics are taken per row of a (groups, -1) view.
        n = blob.legacy_shape(0)
        return n if self.param.mvn_param.across_channels else n * blob.legacy_shape(1)

    def forward(self, bottom, top):
        y, self.std = mvn(bottom[0].data, self.groups(bottom[0]), self.param.mvn_param)
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        rows = self.groups(bottom[0])
        dy = top[0].diff.reshape(rows, -1)
        if self.param.mvn_param.normalize_variance:
            # Caffe's gradient of (x - mean) / std, divided by std + eps as in forward.
            y = top[0].data.reshape(rows, -1)
            dx = (dy - dy.mean(1, keepdim=True) - y * (dy * y).mean(1, keepdim=True)) / self.std
        else:
            dx = dy - dy.mean(1, keepdim=True)
        bottom[0].diff[...] = dx.view(bottom[0].shape)


@register_layer
class BatchNormLayer(_OneToOne):
    """y = (x - mean_c) / sqrt(var_c + eps) over all axes but 1; running stats in blobs 0-2.

    Blobs: 0 the running sum of means, 1 the running sum of unbiased variances, 2 the running
    normaliser s; the stored statistics are blob / s. TRAIN (use_global_stats false) uses the
    batch statistics and updates blob = batch_stat + moving_average_fraction * blob,
    s = 1 + moving_average_fraction * s. Safe in place.
    """

    type = "BatchNorm"

    def setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") \
            else self.phase == caffe_pb2.TEST
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        if not self.blobs:
            self.blobs = [self.new_blob((self.channels,)), self.new_blob((self.channels,)),
                          self.new_blob((1,))]
        for i, blob in enumerate(self.blobs):
            if blob.count() != (1 if i == 2 else self.channels):
                self.fail(f"blob {i} has shape {blob.shape}, expected "
                          f"{(1,) if i == 2 else (self.channels,)}")
        # Like Caffe, hide the statistics from the solver: lr_mult 0 for each, and refuse others.
        for i in range(len(self.blobs)):
            if i == len(self.param.param):
                self.param.param.add(lr_mult=0.0)
            elif self.param.param[i].lr_mult != 0:
                self.fail("cannot configure batch normalization statistics as layer parameters "
                          f"(param {i} has lr_mult {self.param.param[i].lr_mult:g}, must be 0)")
        self.param_propagate_down = [False] * len(self.blobs)
        self.stats = self.x = None

    def reshape(self, bottom, top):
        channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        if channels != self.channels:
            self.fail(f"bottom has {channels} channels, set up for {self.channels}")
        super().reshape(bottom, top)
        b = bottom[0]
        if self.stats is None or self.stats.dtype != b.dtype or self.stats.device != b.device:
            # Per channel: mean, variance, saved mean, 1 / std, and two scratch rows. Zeros, not
            # empty: the batch-norm kernel's running update with momentum 1 still multiplies the
            # old value by 0, and 0 * NaN left in fresh memory is NaN (the next run's variance).
            self.stats = torch.zeros((6, self.channels), dtype=b.dtype, device=b.device)

    def view(self, blob, tensor):
        """tensor as (N, C, spatial): statistics reduce over axes 0 and 2."""
        return tensor.view(blob.shape[0], self.channels, -1)

    def forward(self, bottom, top):
        # torch's batch-norm kernels: the same (x - mean) / sqrt(var + eps), one fused pass
        # (two with batch statistics) written straight into the top.
        p = self.param.batch_norm_param
        x, y = self.view(bottom[0], bottom[0].data), self.view(top[0], top[0].data)
        mean, var, saved_mean, self.invstd, spare1, spare2 = self.stats
        self.x = None
        if self.use_global_stats:
            self._global_stats(mean, var, p.eps)
            torch.ops.aten.native_batch_norm.out(x, None, None, mean, var, False, 0.0, p.eps,
                                                 out=y, save_mean=spare1, save_invstd=spare2)
            return
        if top[0] is bottom[0] and self.need_backward:
            self.x = x.clone()   # backward reads x; in place, forward overwrites it
        # momentum 1: mean and var receive the batch mean and the unbiased batch variance.
        torch.ops.aten.native_batch_norm.out(x, None, None, mean, var, True, 1.0, p.eps, out=y,
                                             save_mean=saved_mean, save_invstd=self.invstd)
        self._update_stats(x, mean, var, p.moving_average_fraction)

    def stats_factor(self):
        """1 / s, the normaliser of the stored sums (0 where s is 0: a net never trained);
        the layer, the torch exporter and the inference program's folding read it."""
        s = self.blobs[2].data
        return torch.where(s == 0, torch.zeros_like(s), 1 / s)

    def _global_stats(self, mean, var, eps):
        """mean, var (and 1 / std) from the stored sums and their normaliser."""
        factor = self.stats_factor()
        torch.mul(self.blobs[0].data, factor, out=mean)
        torch.mul(self.blobs[1].data, factor, out=var)
        torch.add(var, eps, out=self.invstd).rsqrt_()

    def _update_stats(self, x, mean, var, maf):
        if x.numel() == self.channels:
            var.zero_()   # one value per channel: Caffe's bias correction is 1, not 1 / 0
        self.blobs[2].data.mul_(maf).add_(1)
        self.blobs[0].data.mul_(maf).add_(mean)
        self.blobs[1].data.mul_(maf).add_(var)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = self.view(top[0], top[0].diff), self.view(bottom[0], bottom[0].diff)
        if self.use_global_stats:
            torch.mul(dy, self.invstd.view(1, -1, 1), out=dx)
            return
        # dx = (dy - mean(dy) - y mean(dy y)) / std, y the normalized x, in one kernel.
        x = self.x if self.x is not None else self.view(bottom[0], bottom[0].data)
        _, _, saved_mean, invstd, spare1, spare2 = self.stats
        torch.ops.aten.native_batch_norm_backward.out(
            dy, x, None, None, None, saved_mean, invstd, True, self.param.batch_norm_param.eps,
            [True, True, True], out0=dx, out1=spare1, out2=spare2)

    def plan_hints(self, bottom, top):
        # Backward on batch statistics reads x: in place, a hidden input spares its copy.
        return Hints(fusion=BatchNormScaleStep,
                     own_input=top[0] is bottom[0] and not self.use_global_stats)

    def normalized(self, bottom):
        """(x - mean) / std as the last forward computed it (a fused Scale's input)."""
        x = self.x if self.x is not None else self.view(bottom, bottom.data)
        mean, _, saved_mean, invstd = self.stats[:4]
        centre = mean if self.use_global_stats else saved_mean
        return (x - centre.view(1, -1, 1)) * invstd.view(1, -1, 1)


class BatchNormScaleStep(Step):
    """A BatchNorm and the learned per-channel Scale in place on its top, run as one
    batch-norm kernel with weight and bias (torch's nn.BatchNorm2d); the Scale keeps no input
    copy. Every blob ends as the two layers run one by one leave it."""

    @staticmethod
    def fits(bn, scale, bottom, top, next_bottom, next_top):
        return (scale.type == "Scale" and len(next_bottom) == 1 and next_bottom[0] is top[0]
                and next_top[0] is top[0] and not any(bn.loss_weights)
                and not any(scale.loss_weights)
                and all(b.shape == (bn.channels,) for b in scale.blobs))

    def forward(self):
        (bn, bottom, top, _, _), (scale, _, _, _, _) = self.units
        outer, dim, _ = scale.dims
        if dim != bn.channels or outer != bottom[0].shape[0]:
            super().forward()
            return
        p = bn.param.batch_norm_param
        x, y = bn.view(bottom[0], bottom[0].data), bn.view(top[0], top[0].data)
        gamma = scale.blobs[0].data
        beta = scale.blobs[1].data if scale.has_bias else None
        mean, var, saved_mean, bn.invstd, spare1, spare2 = bn.stats
        # In place, backward needs a copy of x (the Scale's gradient reads x_norm even with
        # global statistics); the Net usually spares it through a hidden input.
        keep = top[0] is bottom[0] and bn.need_backward and \
            (not bn.use_global_stats or scale.param_propagate_down[0])
        bn.x = x.clone() if keep else None
        scale.x, scale.fused_source = None, (bn, bottom[0])
        if bn.use_global_stats:
            bn._global_stats(mean, var, p.eps)
            torch.ops.aten.native_batch_norm.out(x, gamma, beta, mean, var, False, 0.0, p.eps,
                                                 out=y, save_mean=spare1, save_invstd=spare2)
            return
        torch.ops.aten.native_batch_norm.out(x, gamma, beta, mean, var, True, 1.0, p.eps,
                                             out=y, save_mean=saved_mean,
                                             save_invstd=bn.invstd)
        bn._update_stats(x, mean, var, p.moving_average_fraction)

    def backward(self):
        (bn, bottom, top, propagate_down, _), (scale, _, _, scale_propagate_down, _) = self.units
        outer, dim, _ = scale.dims
        if dim != bn.channels or outer != bottom[0].shape[0]:
            super().backward()
            return
        # One kernel: dx, d gamma = sum dy x_norm, d beta = sum dy.
        dy = bn.view(top[0], top[0].diff)
        gamma = scale.blobs[0].data
        want = [bool(propagate_down[0] and scale_propagate_down[0]),
                bool(scale.param_propagate_down[0]),
                bool(scale.has_bias and scale.param_propagate_down[-1])]
        x = bn.x if bn.x is not None else bn.view(bottom[0], bottom[0].data)
        mean, var, saved_mean, invstd, spare1, spare2 = bn.stats
        train = not bn.use_global_stats
        stats = (None, None, saved_mean, invstd) if train else (mean, var, None, None)
        eps = bn.param.batch_norm_param.eps
        if all(want):
            dx = bn.view(bottom[0], bottom[0].diff)
            torch.ops.aten.native_batch_norm_backward.out(dy, x, gamma, *stats, train, eps, want,
                                                          out0=dx, out1=spare1, out2=spare2)
            d_gamma, d_beta = spare1, spare2
        elif any(want):
            dx, d_gamma, d_beta = torch.ops.aten.native_batch_norm_backward(
                dy, x, gamma, *stats, train, eps, want)
            if want[0]:
                bn.view(bottom[0], bottom[0].diff).copy_(dx)
        if want[1]:
            scale.blobs[0].diff.add_(d_gamma)
        if want[2]:
            scale.blobs[1].diff.add_(d_beta)
        if scale_propagate_down[0] and not top[0].shares_diff_with(bottom[0]):
            # Caffe leaves the Scale's bottom diff (this top's diff) at dy * gamma.
            dy.mul_(gamma.view(1, -1, 1))


@register_layer
class NormalizeLayer(_OneToOne):
    """SSD's Normalize: y = scale x / sqrt(sum x^2 + eps), the sum over channels and space
    (across_spatial) or over channels at each position; scale is one learned value
    (channel_shared) or one per channel, filled by scale_filler (default 1)."""

    type = "Normalize"

    def setup(self, bottom, top):
        p = self.param.norm_param
        if bottom[0].num_axes < 2:
            self.fail(f"needs a bottom of at least 2 axes, got {bottom[0].shape}")
        shape = () if p.channel_shared else (bottom[0].channels,)
        if not self.blobs:
            filler = p.scale_filler if p.HasField("scale_filler") else \
                caffe_pb2.FillerParameter(type="constant", value=1.0)
            self.blobs = [self.new_blob(shape, filler)]
        if self.blobs[0].count() != (1 if p.channel_shared else bottom[0].channels):
            self.fail(f"scale of shape {self.blobs[0].shape} does not fit channel_shared: "
                      f"{str(p.channel_shared).lower()} and {bottom[0].channels} channels")

    def _views(self, bottom):
        """x as (N, C, H W), the scale broadcast to it, and the axes of the norm."""
        x = bottom[0].data.reshape(bottom[0].num, bottom[0].channels, -1)
        scale = self.blobs[0].data.reshape(1, -1, 1)
        return x, scale, (1, 2) if self.param.norm_param.across_spatial else (1,)

    def forward(self, bottom, top):
        x, scale, axes = self._views(bottom)
        self.norm = (x.square().sum(axes, keepdim=True) + self.param.norm_param.eps).sqrt()
        self.xhat = x / self.norm
        top[0].data.view(x.shape)[...] = self.xhat * scale

    def backward(self, top, propagate_down, bottom):
        x, scale, axes = self._views(bottom)
        dy = top[0].diff.reshape(x.shape)
        if self.param_propagate_down[0]:
            g = (dy * self.xhat).sum((0, 1, 2) if self.param.norm_param.channel_shared
                                     else (0, 2))
            self.blobs[0].diff.view(-1)[...] += g.view(-1)
        if propagate_down[0]:
            # As the fork: the scale multiplies at the end, outside the sum (exact only when
            # the channels share one scale).
            along = (dy * self.xhat).sum(axes, keepdim=True)
            bottom[0].diff.view(x.shape)[...] = (dy - self.xhat * along) / self.norm * scale


# -- local response normalization -----------------------------------------------------------
@register_layer
class LRNLayer(Layer):
    """y = x * scale^-beta; ACROSS_CHANNELS scale = k + alpha/n sum x^2 over n channels,
    WITHIN_CHANNEL scale = 1 + alpha/n^2 sum x^2 over an n x n window (Caffe ignores k)."""

    type = "LRN"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.lrn_param
        if p.local_size % 2 != 1:
            self.fail(f"local_size must be odd, got {p.local_size}")
        self.size, self.beta = p.local_size, p.beta
        self.across = p.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS
        self.k, self.coef = (p.k, p.alpha / p.local_size) if self.across else \
            (1.0, p.alpha / p.local_size ** 2)
        self.scale = self.power = None

    def reshape(self, bottom, top):
        check_4d(self, bottom[0])
        top[0].reshape_like(bottom[0])
        # Like Caffe's scale_ blob: kept between forward and backward, allocated once.
        b = bottom[0]
        if self.scale is None or self.scale.shape != b.shape or self.scale.dtype != b.dtype:
            self.scale = torch.empty(b.shape, dtype=b.dtype, device=b.device)
            self.power = torch.empty_like(self.scale)

    def window_sum(self, t, out=None, square=False):
        """Zero-padded sum of t (of t^2 * coef when `square`) over each element's neighbourhood;
        symmetric, so self-adjoint. Across channels: shifted slices added in place."""
        n, half = self.size, (self.size - 1) // 2
        if not self.across:
            t = t * t * self.coef if square else t
            out[...] = F.avg_pool2d(t, n, 1, half, divisor_override=1)
            return out
        if square:
            torch.mul(t, t, out=out).mul_(self.coef)
        else:
            out.copy_(t)
        for j in range(1, min(half, t.shape[1] - 1) + 1):
            if square:
                out[:, j:].addcmul_(t[:, :-j], t[:, :-j], value=self.coef)
                out[:, :-j].addcmul_(t[:, j:], t[:, j:], value=self.coef)
            else:
                out[:, j:] += t[:, :-j]
                out[:, :-j] += t[:, j:]
        return out

    def scale_power(self, out):
        """scale^-beta; beta = 0.75 (every published LRN) as 1 / sqrt(scale^1.5), three cheap
        passes instead of a pow."""
        if self.beta == 0.75:
            torch.sqrt(self.scale, out=out).mul_(self.scale).rsqrt_()
        else:
            torch.pow(self.scale, -self.beta, out=out)
        return out

    def forward(self, bottom, top):
        x = bottom[0].data
        self.window_sum(x, self.scale, square=True).add_(self.k)
        torch.mul(x, self.scale_power(self.power), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy, dx = bottom[0].data, top[0].data, top[0].diff, bottom[0].diff
        ratio = torch.mul(dy, y).div_(self.scale)
        self.window_sum(ratio, dx)
        torch.mul(dy, self.power, out=ratio)
        torch.addcmul(ratio, x, dx, value=-2 * self.coef * self.beta, out=dx)
