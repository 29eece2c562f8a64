"""Normalization layers: Softmax, MVN (mean-variance normalization) and BatchNorm."""
import torch

from ..layer import Layer, register_layer
from ..proto import caffe_pb2


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


@register_layer
class MVNLayer(_OneToOne):
    """y = (x - mean) / (std + eps) per sample and channel (or per sample across channels)."""

    type = "MVN"

    def groups(self, blob):
        # Caffe's legacy num()/channels(): statistics are taken per row of a (groups, -1) view.
        n = blob.legacy_shape(0)
        return n if self.param.mvn_param.across_channels else n * blob.legacy_shape(1)

    def forward(self, bottom, top):
        p = self.param.mvn_param
        x = bottom[0].data.reshape(self.groups(bottom[0]), -1)
        y = x - x.mean(1, keepdim=True)
        if p.normalize_variance:
            # Caffe adds eps to the standard deviation, not to the variance.
            self.std = torch.sqrt((y * y).mean(1, keepdim=True)) + p.eps
            y = y / self.std
        top[0].data[...] = y.view(top[0].shape)

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

    def reshape(self, bottom, top):
        channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        if channels != self.channels:
            self.fail(f"bottom has {channels} channels, set up for {self.channels}")
        super().reshape(bottom, top)

    def view(self, blob, tensor):
        """tensor as (N, C, spatial): statistics reduce over axes 0 and 2."""
        return tensor.reshape(blob.shape[0], self.channels, -1)

    def forward(self, bottom, top):
        p = self.param.batch_norm_param
        x = self.view(bottom[0], bottom[0].data)
        if self.use_global_stats:
            s = self.blobs[2].data
            factor = torch.where(s == 0, torch.zeros_like(s), 1 / s)
            mean, var = self.blobs[0].data * factor, self.blobs[1].data * factor
            centred = x - mean.view(1, -1, 1)
        else:
            mean = x.mean((0, 2))
            centred = x - mean.view(1, -1, 1)
            var = (centred * centred).mean((0, 2))
            m = x.numel() // self.channels
            maf = p.moving_average_fraction
            self.blobs[2].data.mul_(maf).add_(1)
            self.blobs[0].data.mul_(maf).add_(mean)
            self.blobs[1].data.mul_(maf).add_(var, alpha=m / (m - 1) if m > 1 else 1.0)
        self.std = torch.sqrt(var + p.eps).view(1, -1, 1)
        # Kept for backward: a later in-place layer may overwrite the top.
        self.x_norm = centred / self.std
        top[0].data[...] = self.x_norm.view(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = self.view(top[0], top[0].diff)
        if self.use_global_stats:
            dx = dy / self.std
        else:
            y = self.x_norm
            dx = (dy - dy.mean((0, 2), keepdim=True)
                  - y * (dy * y).mean((0, 2), keepdim=True)) / self.std
        bottom[0].diff[...] = dx.view(bottom[0].shape)
