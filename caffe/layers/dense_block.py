"""senlinuc/caffe_ocr's DenseBlock: a whole DenseNet block in one layer, as its cuDNN code runs it.

The fork has two implementations that disagree: its CPU code scales the stored statistics by a
moving-average counter that only the CPU training updates, its cuDNN code (which trained the
published OCR models, leaving the counter at 0) uses them as they are. pycaffe follows the cuDNN
code: that is what gives the published models their numbers.
"""
import torch
from torch.nn import grad as conv_grad
import torch.nn.functional as F

from ..layer import Layer, register_layer
from ..proto import caffe_pb2

EPS = 1e-5   # CUDNN_BN_MIN_EPSILON


def _constant(value):
    return caffe_pb2.FillerParameter(type="constant", value=value)


@register_layer
class DenseBlockLayer(Layer):
    """numTransition times: x = [x, conv3x3(relu(bn(x)))] with growthRate new channels (use_BC:
    bn-relu-conv1x1 to 4 growthRate first); the convolutions are true convolutions (cuDNN's
    CUDNN_CONVOLUTION: the kernel flipped), pad 1, no bias. bn: y = scaler (x - mean) /
    sqrt(var + 1e-5) + bias, with the stored mean / var in TEST and the batch's (biased
    variance) in TRAIN, where the stored ones move by moving_average_fraction toward the
    batch's (unbiased variance)."""

    type = "DenseBlock"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.denseblock_param
        t, g = p.numTransition, p.growthRate
        if bottom[0].num_axes != 4 or t < 1 or g < 1:
            self.fail(f"needs a 4-D bottom, numTransition and growthRate >= 1; got "
                      f"{tuple(bottom[0].shape)}, {t}, {g}")
        if p.use_dropout and self.phase == caffe_pb2.TRAIN:
            self.fail("use_dropout in TRAIN (the fork's cuDNN dropout) is not implemented")
        c0, bc = bottom[0].shape[1], p.use_BC
        # The fork's blob order: 3x3 filters, BN scalers, biases, means, variances (then with
        # use_BC the 1x1 filters and the 4 g channel BN's four), and a counter only its CPU
        # code reads.
        widths = [c0 + i * g for i in range(t)]
        if not self.blobs:
            make = self.new_blob
            self.blobs = [make((g, 4 * g if bc else c, 3, 3), p.Filter_Filler) for c in widths]
            for filler in (p.BN_Scaler_Filler, p.BN_Bias_Filler, _constant(0), _constant(1)):
                self.blobs += [make((1, c, 1, 1), filler) for c in widths]
            if bc:
                self.blobs += [make((4 * g, c, 1, 1), p.Filter_Filler) for c in widths]
                for filler in (p.BN_Scaler_Filler, p.BN_Bias_Filler, _constant(0), _constant(1)):
                    self.blobs += [make((1, 4 * g, 1, 1), filler) for _ in widths]
            self.blobs.append(make((1,)))
        if len(self.blobs) != (10 if bc else 5) * t + 1:
            self.fail(f"has {len(self.blobs)} blobs, expected {(10 if bc else 5) * t + 1}")
        if len(self.param.param) not in (0, len(self.blobs)):
            self.fail("the fork sets the blobs' lr_mult itself: give no param, or one per blob")
        if not len(self.param.param):   # the fork's: statistics and counter fixed
            fixed = set(range(3 * t, 5 * t)) | set(range(8 * t, 10 * t) if bc else ()) | \
                {len(self.blobs) - 1}
            for i in range(len(self.blobs)):
                self.param.param.add(lr_mult=0.0 if i in fixed else 1.0,
                                     decay_mult=0.0 if i in fixed else 1.0)
        # Per transition, its units: (scaler, bias, mean, var, filter, pad) blob indices.
        self.units = [[(t + i, 2 * t + i, 3 * t + i, 4 * t + i, 5 * t + i, 0),
                       (6 * t + i, 7 * t + i, 8 * t + i, 9 * t + i, i, 1)] if bc else
                      [(t + i, 2 * t + i, 3 * t + i, 4 * t + i, i, 1)] for i in range(t)]

    def reshape(self, bottom, top):
        p, (n, c, h, w) = self.param.denseblock_param, bottom[0].shape
        if c != self.blobs[p.numTransition].shape[1]:
            self.fail(f"bottom has {c} channels, the blobs {self.blobs[p.numTransition].shape[1]}")
        top[0].reshape((n, c + p.numTransition * p.growthRate, h, w))

    def _stat(self, j):
        return self.blobs[j].data.view(1, -1, 1, 1)

    def _bn(self, x, unit):
        scaler, bias, mean, var = (self._stat(j) for j in unit[:4])
        if self.phase == caffe_pb2.TRAIN:
            mu = x.mean((0, 2, 3), keepdim=True)
            v = ((x - mu) ** 2).mean((0, 2, 3), keepdim=True)
            a, m = self.param.denseblock_param.moving_average_fraction, x.numel() // x.shape[1]
            mean.mul_(1 - a).add_(a * mu)
            var.mul_(1 - a).add_(a * v * m / max(m - 1, 1))
        else:
            mu, v = mean, var
        inv = torch.rsqrt(v + EPS)
        xhat = (x - mu) * inv
        return scaler * xhat + bias, xhat, inv

    def forward(self, bottom, top):
        x, self.steps = bottom[0].data, []
        for units in self.units:
            h, steps = x, []
            for unit in units:
                y, xhat, inv = self._bn(h, unit)
                r = torch.relu(y)
                steps.append((r, xhat, inv, y))
                h = F.conv2d(r, self.blobs[unit[4]].data.flip(2, 3), padding=unit[5])
            self.steps.append(steps)
            x = torch.cat([x, h], 1)
        top[0].data[...] = x

    def backward(self, top, propagate_down, bottom):
        dx, ppd = top[0].diff.clone(), self.param_propagate_down
        train = self.phase == caffe_pb2.TRAIN
        for units, steps in zip(reversed(self.units), reversed(self.steps)):
            c = dx.shape[1] - self.param.denseblock_param.growthRate
            dh, dx = dx[:, c:], dx[:, :c].clone()
            for unit, (r, xhat, inv, y) in zip(reversed(units), reversed(steps)):
                w, pad = self.blobs[unit[4]], unit[5]
                if ppd[unit[4]]:
                    w.diff.add_(conv_grad.conv2d_weight(r, w.shape, dh, padding=pad).flip(2, 3))
                dy = conv_grad.conv2d_input(r.shape, w.data.flip(2, 3), dh, padding=pad) * (y > 0)
                for j, grad in ((unit[0], dy * xhat), (unit[1], dy)):
                    if ppd[j]:
                        self.blobs[j].diff.add_(grad.sum((0, 2, 3)).view_as(self.blobs[j].diff))
                dxhat = dy * self._stat(unit[0])
                if train:   # through the batch statistics
                    dxhat = dxhat - dxhat.mean((0, 2, 3), keepdim=True) - \
                        xhat * (dxhat * xhat).mean((0, 2, 3), keepdim=True)
                dh = dxhat * inv
            dx += dh
        if propagate_down[0]:
            bottom[0].diff[...] = dx
