"""Classifier: a Net that takes images and gives class probabilities (pycaffe's)."""
import numpy as np

from . import io
from .errors import CaffeError
from .net import Net
from .proto import caffe_pb2


def configure_transformer(net, mean=None, input_scale=None, raw_scale=None,
                          channel_swap=None):
    """A Transformer for the net's first input: H x W x K images -> K x H x W."""
    in_ = net.inputs[0] if net.inputs else None
    if in_ is None:
        raise CaffeError("the net has no input blob (an Input layer) to feed images to")
    transformer = io.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


class Classifier(Net):
    """A TEST-phase Net for image classification by centre crop or 10-crop oversampling.

    image_dims: (height, width) images are resized to before cropping (default: the net's
    input size); mean, input_scale, raw_scale, channel_swap: as caffe.io.Transformer.
    Extra keyword arguments (dtype, device) go to caffe.Net.
    """

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None, **net_kwargs):
        super().__init__(model_file, pretrained_file, caffe_pb2.TEST, **net_kwargs)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale,
                                                 channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None and len(image_dims)
                                   else self.crop_dims)

    def predict(self, inputs, oversample=True):
        """(N x C) class probabilities for N H x W x K images; with oversample, each is the
        mean over ten crops (corners, centre and their mirrors), else the centre crop's."""
        if not len(inputs):
            raise CaffeError("predict needs at least one image")
        h, w = (int(d) for d in self.image_dims)
        images = np.stack([io.resize_image(im, (h, w)) for im in inputs]).astype(np.float32)
        if oversample:
            crops = io.oversample(images, self.crop_dims)
        else:
            # Centre crop starting at floor(centre - crop / 2), as pycaffe's truncation does.
            y, x = (int(c / 2.0 - d / 2.0) for c, d in zip((h, w), self.crop_dims))
            crops = images[:, y:y + self.crop_dims[0], x:x + self.crop_dims[1], :]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
