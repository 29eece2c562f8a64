"""Community layers that OpenCV's Caffe importer accepts and published models use.

Depthwise convolution (MobileNet ports), ShuffleChannel (ShuffleNet), Axpy (SENet /
MobileNet v2 ports), and YOLO v2's Reorg and Region. YOLO v3's Upsample is the one-bottom
form of caffe/layers/segmentation.py's Upsample.
"""
import torch

from ..layer import Layer, NeuronLayer, register_layer
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


def _shuffle(x, groups):
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
        top[0].data[...] = _shuffle(bottom[0].data, self.param.shuffle_channel_param.group)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            c, g = top[0].shape[1], self.param.shuffle_channel_param.group
            bottom[0].diff[...] = _shuffle(top[0].diff, c // g)


@register_layer
class ReorgLayer(Layer):
    """Space to depth, OpenCV's order: y[(dy * s + dx) * C + c, j, i] = x[c, j s + dy, i s + dx]
    (N x C s^2 x H/s x W/s); reverse: the inverse, depth to space."""

    type = "Reorg"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        p, shape = self.param.reorg_param, tuple(bottom[0].shape)
        s = p.stride
        if len(shape) != 4 or s < 1:
            self.fail(f"needs a 4-D bottom and a positive stride, got {shape}, stride {s}")
        n, c, h, w = shape
        if p.reverse:
            if c % (s * s):
                self.fail(f"channels {c} not divisible by stride^2 ({s * s})")
            top[0].reshape((n, c // (s * s), h * s, w * s))
        else:
            if h % s or w % s:
                self.fail(f"height {h} and width {w} must be multiples of the stride {s}")
            top[0].reshape((n, c * s * s, h // s, w // s))

    @staticmethod
    def to_depth(x, s):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4) \
            .reshape(n, c * s * s, h // s, w // s)

    @staticmethod
    def to_space(y, s):
        n, cs, h, w = y.shape
        return y.reshape(n, s, s, cs // (s * s), h, w).permute(0, 3, 4, 1, 5, 2) \
            .reshape(n, cs // (s * s), h * s, w * s)

    def forward(self, bottom, top):
        p = self.param.reorg_param
        op = self.to_space if p.reverse else self.to_depth
        top[0].data[...] = op(bottom[0].data, p.stride)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            p = self.param.reorg_param
            op = self.to_depth if p.reverse else self.to_space
            bottom[0].diff[...] = op(top[0].diff, p.stride)


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
