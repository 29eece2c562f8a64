"""Neuron layers: element-wise functions y = f(x), one bottom and one top of equal shape.

Every layer here may run in place (top is bottom) except AbsVal, which Caffe refuses.
Backward passes that need x rather than y keep a copy of x when run in place, as Caffe's
PReLU does, so that in-place use gives the same gradient as out-of-place use.
"""
import math

import torch

from ..layer import NeuronLayer, register_layer
from ..proto import caffe_pb2

BNLL_THRESHOLD = 50.0  # Caffe's kBNLL_THRESHOLD: exp() is clamped here in BNLL's backward


class InputNeuronLayer(NeuronLayer):
    """A neuron layer whose backward reads x: in place, x is saved before forward overwrites it."""

    _saved = None

    def keep_input(self, bottom, top, needed=True):
        # Only backward reads the copy: none where the Net never calls it (deploy nets).
        x = bottom[0].data
        self._saved = x.clone() if needed and self.need_backward and top[0] is bottom[0] \
            else None
        return x

    def input(self, bottom):
        return bottom[0].data if self._saved is None else self._saved


@register_layer
class AbsValLayer(NeuronLayer):
    """y = |x|. Not in place (Caffe refuses it)."""

    type = "AbsVal"

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            self.fail("does not allow in-place computation (top must differ from bottom)")

    def forward(self, bottom, top):
        torch.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = torch.sign(bottom[0].data) * top[0].diff


@register_layer
class BNLLLayer(InputNeuronLayer):
    """y = log(1 + exp(x)) (binomial normal log likelihood), computed without overflow."""

    type = "BNLL"

    def forward(self, bottom, top):
        x = self.keep_input(bottom, top)
        # x + log(1 + exp(-x)) for x > 0 is Caffe's overflow-free branch.
        top[0].data[...] = torch.where(x > 0, x + torch.log1p(torch.exp(-x)),
                                       torch.log1p(torch.exp(x)))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            e = torch.exp(torch.clamp(self.input(bottom), max=BNLL_THRESHOLD))
            bottom[0].diff[...] = top[0].diff * e / (e + 1)


@register_layer
class ClipLayer(InputNeuronLayer):
    """y = max(min, min(x, max)); the gradient passes where min <= x <= max."""

    type = "Clip"

    def setup(self, bottom, top):
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            self.fail("clip_param needs both min and max")
        if p.min > p.max:
            self.fail(f"clip_param min ({p.min:g}) is greater than max ({p.max:g})")

    def forward(self, bottom, top):
        p = self.param.clip_param
        x = self.keep_input(bottom, top)
        top[0].data[...] = torch.clamp(x, p.min, p.max)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            p, x = self.param.clip_param, self.input(bottom)
            bottom[0].diff[...] = top[0].diff * ((x >= p.min) & (x <= p.max))


@register_layer
class DropoutLayer(NeuronLayer):
    """TRAIN: y = x * mask / (1 - p), mask ~ Bernoulli(1 - p); TEST: y = x.

    Faster R-CNN's scale_train: false moves the scale to test time: TRAIN y = x * mask,
    TEST y = x * (1 - p).
    """

    type = "Dropout"

    def setup(self, bottom, top):
        ratio = self.param.dropout_param.dropout_ratio
        if not 0.0 <= ratio < 1.0:
            self.fail(f"dropout_ratio must be in [0, 1), got {ratio:g}")
        self.ratio, self.scale = ratio, 1.0 / (1.0 - ratio)
        # What TEST multiplies by; 1 (a plain copy) unless Faster R-CNN's scale_train is off.
        self.test_scale = 1.0
        if not self.param.dropout_param.scale_train:
            self.scale, self.test_scale = 1.0, 1.0 - ratio
        self.mask = None

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.phase != caffe_pb2.TRAIN:
            if self.test_scale != 1.0:
                torch.mul(x, self.test_scale, out=top[0].data)
            elif top[0] is not bottom[0]:
                top[0].data.copy_(x)
            return
        keep = torch.rand(x.shape, dtype=x.dtype, device=x.device) >= self.ratio
        # Scaled mask: kept units get exactly 1 / (1 - p), dropped ones 0.
        self.mask = keep.to(x.dtype) * self.scale
        torch.mul(x, self.mask, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.phase != caffe_pb2.TRAIN:
            if self.test_scale != 1.0:
                torch.mul(top[0].diff, self.test_scale, out=bottom[0].diff)
            elif top[0] is not bottom[0]:
                bottom[0].diff.copy_(top[0].diff)
            return
        torch.mul(top[0].diff, self.mask, out=bottom[0].diff)


@register_layer
class ELULayer(InputNeuronLayer):
    """y = x if x > 0 else alpha * (exp(x) - 1)."""

    type = "ELU"

    def forward(self, bottom, top):
        alpha = self.param.elu_param.alpha
        # With alpha >= 0, y > 0 exactly where x > 0, so backward can read y in place.
        x = self.keep_input(bottom, top, needed=alpha < 0)
        top[0].data[...] = torch.clamp(x, min=0) + alpha * torch.expm1(torch.clamp(x, max=0))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        alpha, y, dy = self.param.elu_param.alpha, top[0].data, top[0].diff
        bottom[0].diff[...] = torch.where(self.input(bottom) > 0, dy, dy * (y + alpha))


@register_layer
class ExpLayer(NeuronLayer):
    """y = base ^ (shift + scale * x); base -1 means e."""

    type = "Exp"

    def setup(self, bottom, top):
        p = self.param.exp_param
        if p.base != -1 and not p.base > 0:
            self.fail(f"exp_param base must be strictly positive (or -1 for e), got {p.base:g}")
        log_base = 1.0 if p.base == -1 else math.log(p.base)
        self.inner_scale = log_base * p.scale
        self.outer_scale = 1.0 if p.shift == 0 else math.exp(log_base * p.shift)

    def forward(self, bottom, top):
        top[0].data[...] = torch.exp(self.inner_scale * bottom[0].data) * self.outer_scale

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].data * top[0].diff * self.inner_scale


@register_layer
class LogLayer(InputNeuronLayer):
    """y = log_base(shift + scale * x); base -1 means e."""

    type = "Log"

    def setup(self, bottom, top):
        p = self.param.log_param
        if p.base != -1 and not p.base > 0:
            self.fail(f"log_param base must be strictly positive (or -1 for e), got {p.base:g}")
        if p.base == 1:
            self.fail("log_param base 1 has no logarithm (1 / log(base) is infinite)")
        log_base = 1.0 if p.base == -1 else math.log(p.base)
        self.base_scale = 1.0 / log_base
        self.diff_scale = p.scale / log_base

    def forward(self, bottom, top):
        p = self.param.log_param
        x = self.keep_input(bottom, top)
        top[0].data[...] = torch.log(p.scale * x + p.shift) * self.base_scale

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            p = self.param.log_param
            inner = p.scale * self.input(bottom) + p.shift
            bottom[0].diff[...] = top[0].diff * self.diff_scale / inner


@register_layer
class PowerLayer(InputNeuronLayer):
    """y = (shift + scale * x) ^ power."""

    type = "Power"

    def setup(self, bottom, top):
        p = self.param.power_param
        self.diff_scale = p.power * p.scale

    def forward(self, bottom, top):
        p = self.param.power_param
        x = self.keep_input(bottom, top)
        if self.diff_scale == 0:  # y does not depend on x
            # torch's pow, like C's, gives NaN or inf where Python's ** would raise or go complex.
            value = torch.tensor(p.shift, dtype=torch.float64).pow(p.power)
            top[0].data.fill_(1.0 if p.power == 0 else float(value))
            return
        top[0].data[...] = torch.pow(p.scale * x + p.shift, p.power)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p, dy = self.param.power_param, top[0].diff
        if self.diff_scale == 0:
            bottom[0].diff.zero_()
            return
        x = self.input(bottom)
        if p.power == 1:
            grad = torch.full_like(x, self.diff_scale)
        elif p.power == 2:
            grad = self.diff_scale * (p.scale * x + p.shift)
        else:
            # Caffe's form dy/dx = power * scale * y / (shift + scale * x): same values, and the
            # same NaN where the base is 0, as the reference.
            grad = self.diff_scale * top[0].data / (p.scale * x + p.shift)
        bottom[0].diff[...] = grad * dy


@register_layer
class PReLULayer(InputNeuronLayer):
    """y = max(0, x) + a_c * min(0, x), a learned slope per channel (axis 1) or one shared."""

    type = "PReLU"

    def setup(self, bottom, top):
        p = self.param.prelu_param
        if bottom[0].num_axes < 2:
            self.fail(f"bottom must have at least 2 axes, got shape {bottom[0].shape}")
        channels = bottom[0].shape[1]
        if not self.blobs:
            filler = p.filler if p.HasField("filler") else \
                caffe_pb2.FillerParameter(type="constant", value=0.25)
            self.blobs = [self.new_blob(() if p.channel_shared else (channels,), filler)]
        expected = 1 if p.channel_shared else channels
        if self.blobs[0].count() != expected:
            self.fail(f"negative slope blob has {self.blobs[0].count()} values, expected "
                      f"{expected} ({'channel_shared' if p.channel_shared else 'one per channel'})")

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            self.fail(f"bottom must have at least 2 axes, got shape {bottom[0].shape}")
        super().reshape(bottom, top)

    def slope(self, x):
        a = self.blobs[0].data
        if self.param.prelu_param.channel_shared:
            return a.reshape(())
        return a.reshape((-1,) + (1,) * (x.dim() - 2))  # broadcast over axis 1

    def forward(self, bottom, top):
        x = self.keep_input(bottom, top)
        top[0].data[...] = torch.clamp(x, min=0) + self.slope(x) * torch.clamp(x, max=0)

    def backward(self, top, propagate_down, bottom):
        x, dy = self.input(bottom), top[0].diff
        negative = x <= 0
        dx = torch.where(negative, dy * self.slope(x), dy) if propagate_down[0] else None
        if self.param_propagate_down[0]:
            contrib = dy * x * negative
            if self.param.prelu_param.channel_shared:
                grad = contrib.sum()
            else:
                grad = contrib.transpose(0, 1).reshape(x.shape[1], -1).sum(1)
            self.blobs[0].diff.add_(grad.reshape(self.blobs[0].shape))
        if dx is not None:  # written last: in place, dy is this very diff
            bottom[0].diff[...] = dx


@register_layer
class ReLULayer(InputNeuronLayer):
    """y = max(0, x) + negative_slope * min(0, x)."""

    type = "ReLU"

    def forward(self, bottom, top):
        slope = self.param.relu_param.negative_slope
        # With slope >= 0, y > 0 exactly where x > 0, so in place backward can read y.
        x = self.keep_input(bottom, top, needed=slope < 0)
        # One fused pass with no temporaries (torch.where costs ~20x more on big blobs).
        if slope == 0:
            torch.clamp_min(x, 0, out=top[0].data)
        else:
            torch.ops.aten.leaky_relu.out(x, slope, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x, dy, slope = self.input(bottom), top[0].diff, self.param.relu_param.negative_slope
            # dy where x > 0, else slope * dy; written in one pass (in place: dy is the output).
            if slope == 0:
                torch.ops.aten.threshold_backward.grad_input(dy, x, 0, grad_input=bottom[0].diff)
            else:
                torch.ops.aten.leaky_relu_backward.grad_input(dy, x, slope, False,
                                                              grad_input=bottom[0].diff)


@register_layer
class SigmoidLayer(NeuronLayer):
    """y = 1 / (1 + exp(-x))."""

    type = "Sigmoid"

    def forward(self, bottom, top):
        torch.sigmoid(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * y * (1 - y)


@register_layer
class SwishLayer(NeuronLayer):
    """y = x * sigmoid(beta * x)."""

    type = "Swish"

    def forward(self, bottom, top):
        x = bottom[0].data
        self.sig = torch.sigmoid(self.param.swish_param.beta * x)
        torch.mul(x, self.sig, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            beta, y = self.param.swish_param.beta, top[0].data
            # d/dx x s(bx) = s + b x s (1 - s) = b y + s (1 - b y)
            bottom[0].diff[...] = top[0].diff * (beta * y + self.sig * (1 - beta * y))


@register_layer
class TanHLayer(NeuronLayer):
    """y = tanh(x)."""

    type = "TanH"

    def forward(self, bottom, top):
        torch.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * (1 - y * y)


@register_layer
class ThresholdLayer(NeuronLayer):
    """y = 1 if x > threshold else 0. Not differentiable: backward writes a zero gradient."""

    type = "Threshold"

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data > self.param.threshold_param.threshold

    def backward(self, top, propagate_down, bottom):
        # Caffe aborts here (NOT_IMPLEMENTED); the derivative is 0 almost everywhere.
        if propagate_down[0]:
            bottom[0].diff.zero_()
