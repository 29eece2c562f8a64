"""Detector: windowed detection, classifying image crops as R-CNN does (pycaffe's).

Windows are (ymin, xmin, ymax, xmax) pixel boxes, end exclusive. With context_pad, each
window is grown so that, once warped to the net's input size, `context_pad` pixels of
surrounding image frame it; parts outside the image are filled with the mean.
"""
import os

import numpy as np

from . import io
from .classifier import configure_transformer
from .errors import CaffeError
from .net import Net
from .proto import caffe_pb2


class Detector(Net):
    """A TEST-phase Net that scores windows of images.

    mean, input_scale, raw_scale, channel_swap: as caffe.io.Transformer; context_pad: pixels
    of context around each warped window (R-CNN uses 16). Extra keyword arguments (dtype,
    device) go to caffe.Net.
    """

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None, **net_kwargs):
        super().__init__(model_file, pretrained_file, caffe_pb2.TEST, **net_kwargs)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale,
                                                 channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """Score every window: images_windows is an iterable of (image file, windows).

        Returns a list of {'window', 'prediction', 'filename'} dicts in input order."""
        images_windows = [(fname, [np.asarray(w) for w in windows])
                          for fname, windows in images_windows]
        window_inputs = []
        for fname, windows in images_windows:
            image = io.load_image(fname).astype(np.float32)
            window_inputs.extend(self.crop(image, window) for window in windows)
        if not window_inputs:
            return []
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, w) for w in window_inputs])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections, ix = [], 0
        for fname, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[ix],
                                   "filename": fname})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames):
        """Score Selective Search proposals; needs the external selective_search_ijcv_with_python
        package (and MATLAB), as pycaffe did."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise CaffeError(
                "detect_selective_search needs the external selective_search_ijcv_with_python "
                "package (with MATLAB), which is not installed; compute window proposals with "
                "a tool of your choice and call detect_windows([(image, windows), ...])"
            ) from None
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im, window):
        """The window's pixels, or with context_pad the padded crop at the net's size."""
        window = np.asarray(window)
        y0, x0, y1, x1 = (int(v) for v in window[:4])
        if not self.context_pad:
            return im[y0:y1, x0:x1]
        crop_size = self.blobs[self.inputs[0]].width   # the net input is square
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        # Grow the box about its centre so the context fills context_pad output pixels.
        half_h, half_w = (y1 - y0 + 1) / 2.0, (x1 - x0 + 1) / 2.0
        center = np.array((y0 + half_h, x0 + half_w))
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w,
                                                               half_h, half_w)))
        scale_h = crop_size / (box[2] - box[0] + 1)
        scale_w = crop_size / (box[3] - box[1] + 1)
        # Output pixels that fall outside the image stay at the mean.
        pad_y = int(round(max(0, -box[0]) * scale_h))
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        if clip_h <= 0 or clip_w <= 0:
            raise CaffeError(f"window {tuple(window)} lies outside the {im_h}x{im_w} image")
        crop_h = min(int(round(clip_h * scale_h)), crop_size - pad_y)
        crop_w = min(int(round(clip_w * scale_w)), crop_size - pad_x)
        context = im[int(box[0]):int(box[2]), int(box[1]):int(box[3])]
        out = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        out[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = io.resize_image(context,
                                                                          (crop_h, crop_w))
        return out

    def configure_crop(self, context_pad):
        """Set the crop size (the net's input, as H x W x K) and the context padding, with
        the mean brought back to raw image space to fill padding outside the image."""
        in_ = self.inputs[0]
        inv_transpose = np.argsort(self.transformer.transpose[in_])
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_transpose]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        # In the mean's own type, as BVLC (a float64 mean makes float64 padded crops).
        crop_mean = np.array(mean).transpose(inv_transpose)
        channel_swap = self.transformer.channel_swap.get(in_)
        if channel_swap is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_swap)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
