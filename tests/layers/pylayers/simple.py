"""Python layers written as a pycaffe user writes them: NumPy in, NumPy out."""
import numpy as np

import caffe


class TimesTen(caffe.Layer):
    """y = 10 x; no parameters."""

    def setup(self, bottom, top):
        if len(bottom) != 1:
            raise Exception("TimesTen takes one bottom")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 10 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 10 * top[0].diff


class Power(caffe.Layer):
    """y = x ** p with p read from param_str (a number)."""

    def setup(self, bottom, top):
        self.p = float(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data ** self.p

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].data
            bottom[0].diff[...] = self.p * x ** (self.p - 1) * top[0].diff


class ChannelScale(caffe.Layer):
    """y[n, c] = w[c] * x[n, c] + b[c]: learned blobs w and b (C each) made with add_blob."""

    def setup(self, bottom, top):
        if len(self.blobs) == 0:
            channels = bottom[0].data.shape[1]
            self.blobs.add_blob(channels)
            self.blobs.add_blob(channels)
            self.blobs[0].data[...] = 1 + np.arange(channels)
            self.blobs[1].data[...] = 0.5

    def _shape(self, x):
        return (1, -1) + (1,) * (x.ndim - 2)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        w, b = (blob.data.reshape(self._shape(x)) for blob in self.blobs)
        top[0].data[...] = w * x + b

    def backward(self, top, propagate_down, bottom):
        x, dy = bottom[0].data, top[0].diff
        axes = tuple(i for i in range(x.ndim) if i != 1)
        self.blobs[0].diff[...] += (dy * x).sum(axis=axes)
        self.blobs[1].diff[...] += dy.sum(axis=axes)
        if propagate_down[0]:
            bottom[0].diff[...] = self.blobs[0].data.reshape(self._shape(x)) * dy


class PhaseReporter(caffe.Layer):
    """top = phase (0 TRAIN, 1 TEST), a 1-element blob."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(1)

    def forward(self, bottom, top):
        top[0].data[...] = self.phase


class Broken(caffe.Layer):
    """Raises from forward, to test that the error names the layer."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        raise ValueError("broken on purpose")


NotALayer = 42
