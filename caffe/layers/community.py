"""Community layers that OpenCV's Caffe importer accepts and published models use.

Depthwise convolution (MobileNet ports), ShuffleChannel (ShuffleNet), Axpy (SENet /
MobileNet v2 ports), YOLO v2's Reorg and Region, and the ports' activations (ReLU6, Mish,
HardSwish, HardSigmoid). YOLO v3's Upsample is the one-bottom form of
caffe/layers/segmentation.py's Upsample; the OCR forks' layers are in ocr.py, the YOLO
detection outputs in yolo.py.
"""
import torch
import torch.nn.functional as F

from ..layer import Layer, NeuronLayer, register_layer
from .neuron import InputNeuronLayer
from .vision import ConvolutionLayer


@register_layer
class ConvolutionDepthwiseLayer(ConvolutionLayer):
    """y = W * x + b with one group per input channel (group = C), whatever group says;
    W is (num_output, 1, *kernel)."""

    type = "ConvolutionDepthwise"

    def setup(self, bottom, top):
        p = self.param.convolution_param
        channels = bottom[0].shape[p.axis if p.axis >= 0 else p.axis + bottom[0].num_axes]
        if p.HasField("group") and p.group not in (1, channels):
            self.fail(f"group {p.group} must be the input channels ({channels})")
        p.group = channels
        super().setup(bottom, top)


@register_layer
class DepthwiseConvolutionLayer(ConvolutionDepthwiseLayer):
    """The same layer under yonghenglh6/DepthwiseConvolution's name."""

    type = "DepthwiseConvolution"


def shuffle_channels(x, groups):
    """(N, C, ...) with channel g * (C / G) + i moved to i * G + g."""
    n, c = x.shape[:2]
    return x.reshape(n, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


@register_layer
class ShuffleChannelLayer(NeuronLayer):
    """Channel c = g * (C / G) + i moves to i * G + g (ShuffleNet's channel shuffle)."""

    type = "ShuffleChannel"

    def setup(self, bottom, top):
        g = self.param.shuffle_channel_param.group
        if g <= 0 or bottom[0].shape[1] % g:
            self.fail(f"group {g} must divide the channels ({bottom[0].shape[1]})")

    def forward(self, bottom, top):
        top[0].data[...] = shuffle_channels(bottom[0].data, self.param.shuffle_channel_param.group)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            c, g = top[0].shape[1], self.param.shuffle_channel_param.group
            bottom[0].diff[...] = shuffle_channels(top[0].diff, c // g)


def reorg_index(c, h, w, s):
    """darknet's reorg (as OpenCV runs it) as a permutation: out.flat = x.flat[index].

    It reads the C x H x W input's memory as C/s^2 x Hs x Ws and moves each s x s cell's
    (dy, dx) entry to channel block dy * s + dx; the result is read as C s^2 x H/s x W/s.
    """
    return torch.arange(c * h * w).reshape(c // (s * s), h, s, w, s) \
        .permute(2, 4, 0, 1, 3).reshape(-1)


@register_layer
class ReorgLayer(Layer):
    """YOLO v2's reorg: y.flat = x.flat[reorg_index(C, H, W, s)], N x C s^2 x H/s x W/s
    (darknet's order, which OpenCV reproduces; C must be a multiple of s^2); reverse: the
    inverse permutation, N x C/s^2 x Hs x Ws."""

    type = "Reorg"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        p, shape = self.param.reorg_param, tuple(bottom[0].shape)
        s = p.stride
        if len(shape) != 4 or s < 1:
            self.fail(f"needs a 4-D bottom and a positive stride, got {shape}, stride {s}")
        n, c, h, w = shape
        out = (n, c // (s * s), h * s, w * s) if p.reverse else (n, c * s * s, h // s, w // s)
        big = out if p.reverse else shape      # the side the index is defined on
        if big[1] % (s * s) or (not p.reverse and (h % s or w % s)):
            self.fail(f"shape {shape} does not reorganise by stride {s}: channels "
                      f"{big[1]} must be a multiple of {s * s}, height and width of {s}")
        self.index = reorg_index(*big[1:], s).to(self.device)
        top[0].reshape(out)

    def _move(self, src, dst, gather):
        n = src.shape[0]
        if gather:
            dst[...] = src.reshape(n, -1)[:, self.index].view(dst.shape)
        else:
            dst.view(n, -1)[:, self.index] = src.reshape(n, -1)

    def forward(self, bottom, top):
        self._move(bottom[0].data, top[0].data, not self.param.reorg_param.reverse)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self._move(top[0].diff, bottom[0].diff, self.param.reorg_param.reverse)


@register_layer
class RegionLayer(NeuronLayer):
    """YOLO v2's region activations, per anchor box of (coords + 1 + classes) channels:
    logistic on x, y and the objectness, softmax over the classes when softmax is set
    (raw otherwise), w and h unchanged. Forward only, as OpenCV runs it."""

    type = "Region"

    def setup(self, bottom, top):
        p = self.param.region_param
        self.box = p.coords + 1 + p.classes
        if p.coords < 2 or bottom[0].shape[1] != p.boxes_of_each_grid * self.box:
            self.fail(f"channels {bottom[0].shape[1]} must be boxes_of_each_grid "
                      f"({p.boxes_of_each_grid}) x (coords + 1 + classes) ({self.box})")

    def forward(self, bottom, top):
        p, x = self.param.region_param, bottom[0].data
        n, _, h, w = x.shape
        v = x.reshape(n, p.boxes_of_each_grid, self.box, h, w)
        y = v.clone()
        y[:, :, :2] = torch.sigmoid(v[:, :, :2])
        y[:, :, p.coords] = torch.sigmoid(v[:, :, p.coords])
        if p.softmax:
            y[:, :, p.coords + 1:] = torch.softmax(v[:, :, p.coords + 1:], dim=2)
        top[0].data[...] = y.reshape(x.shape)


@register_layer
class AxpyLayer(Layer):
    """y = a * x + b, a of shape N x C (x 1 x 1) scaling x (N x C x H x W) per channel."""

    type = "Axpy"
    exact_num_bottom_blobs = 3
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        a, x, b = (t.shape for t in bottom)
        if tuple(x) != tuple(b) or tuple(a[:2]) != tuple(x[:2]) or \
                any(d != 1 for d in a[2:]) or len(x) < 2:
            self.fail(f"bottoms must be N x C x 1 x 1, N x C x H x W twice; got "
                      f"{tuple(a)}, {tuple(x)}, {tuple(b)}")
        top[0].reshape_like(bottom[1])

    def scale(self, bottom):
        a, x = bottom[0].data, bottom[1].data
        return a.reshape(tuple(a.shape[:2]) + (1,) * (x.dim() - 2))

    def forward(self, bottom, top):
        top[0].data[...] = self.scale(bottom) * bottom[1].data + bottom[2].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        if propagate_down[0]:
            dims = tuple(range(2, dy.dim()))
            bottom[0].diff[...] = (dy * bottom[1].data).sum(dim=dims).view_as(bottom[0].diff)
        if propagate_down[1]:
            bottom[1].diff[...] = self.scale(bottom) * dy
        if propagate_down[2]:
            bottom[2].diff[...] = dy


# -- community activations: the forks' and ports' layers that published nets use -------------

@register_layer
class ReLU6Layer(InputNeuronLayer):
    """y = min(max(x, 0) + negative_slope * min(x, 0), 6) (eric612/MobileNet-YOLO's ReLU6)."""

    type = "ReLU6"

    def forward(self, bottom, top):
        slope = self.param.relu6_param.negative_slope
        # With slope >= 0, y > 0 exactly where x > 0 and y < 6 where x < 6: backward reads y.
        x = self.keep_input(bottom, top, needed=slope < 0)
        top[0].data[...] = torch.clamp(torch.where(x > 0, x, x * slope), max=6)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x, dy = self.input(bottom), top[0].diff
            slope = self.param.relu6_param.negative_slope
            bottom[0].diff[...] = torch.where(x > 0, dy, dy * slope) * (x < 6)


@register_layer
class MishLayer(InputNeuronLayer):
    """y = x tanh(softplus(x)), softplus(x) = x above 20 (ChenYingpeng/darknet2caffe's Mish)."""

    type = "Mish"

    def forward(self, bottom, top):
        x = self.keep_input(bottom, top)
        top[0].data[...] = x * torch.tanh(F.softplus(x))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            # The fork's backward feeds y where x belongs; this is the derivative of its forward.
            x = self.input(bottom)
            t = torch.tanh(F.softplus(x))
            bottom[0].diff[...] = top[0].diff * (t + x * (1 - t * t) * torch.sigmoid(x))


@register_layer
class HardSwishLayer(InputNeuronLayer):
    """y = x min(max(x + 3, 0), 6) / 6 (MobileNet v3's h-swish, as its Caffe ports define it)."""

    type = "HardSwish"

    def forward(self, bottom, top):
        x = self.keep_input(bottom, top)
        top[0].data[...] = x * torch.clamp(x + 3, 0, 6) / 6

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = self.input(bottom)
            slope = torch.where(x < -3, 0.0, torch.where(x > 3, 1.0, (2 * x + 3) / 6))
            bottom[0].diff[...] = top[0].diff * slope


@register_layer
class HardSigmoidLayer(NeuronLayer):
    """y = min(max(0.2 x + 0.5, 0), 1) (eric612/MobileNet-YOLO's HardSigmoid)."""

    type = "HardSigmoid"

    def forward(self, bottom, top):
        top[0].data[...] = torch.clamp(0.2 * bottom[0].data + 0.5, 0, 1)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            # 0 < y < 1 exactly where the slope is 0.2, so this reads y and runs in place.
            # (The fork tests y against +-2.5 instead, which is never false.)
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * 0.2 * ((y > 0) & (y < 1))
