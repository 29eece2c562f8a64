"""WindowData: R-CNN's windows of images, warped to a square crop."""
import re

import numpy as np

from ... import formats
from ...data.image import decode_image, hwc_to_chw, read_image, read_image_bytes, resize_linear
from ...data.transformer import draw_seed, load_mean
from ...errors import DataError
from ...layer import register_layer
from .base import np_dtype, BasePrefetchingDataLayer, log


class _WindowSource:
    """R-CNN window sampling: each batch holds background windows, then foreground windows."""

    def __init__(self, layer_param, images, fg, bg, crop, mirror, scale, mean, mean_values,
                 seed, dtype, channels):
        p = layer_param.window_data_param
        self.p, self.images, self.fg, self.bg = p, images, fg, bg
        self.crop, self.mirror, self.scale = crop, mirror, scale
        self.mean, self.mean_values, self.dtype, self.channels = mean, mean_values, dtype, channels
        self.rng = np.random.default_rng(seed)
        self.cache = {}

    def _image(self, index):
        path = self.images[index][0]
        if self.p.cache_images:
            if index not in self.cache:
                self.cache[index] = read_image_bytes(path)
            return decode_image(self.cache[index], self.channels != 1, f"image file '{path}'")
        return read_image(path, color=self.channels != 1)

    def load_batch(self):
        batch = int(self.p.batch_size)
        num_fg = int(np.float32(batch) * np.float32(self.p.fg_fraction))
        data = np.zeros((batch, self.channels, self.crop, self.crop), dtype=self.dtype)
        labels = np.zeros(batch, dtype=self.dtype)
        item = 0
        for windows, count in ((self.bg, batch - num_fg), (self.fg, num_fg)):
            for _ in range(count):
                window = windows[int(self.rng.integers(len(windows)))]
                do_mirror = bool(self.mirror and self.rng.integers(2))
                self._warp(window, do_mirror, data[item])
                labels[item] = window[1]
                item += 1
        return data, labels

    def _warp(self, window, do_mirror, out):
        index, _, _, x1, y1, x2, y2 = window
        img = self._image(index)
        rows, cols = img.shape[:2]
        crop, pad = self.crop, self.p.context_pad
        f32 = np.float32
        out_h = out_w = crop
        pad_h = pad_w = 0
        if pad > 0 or self.p.crop_mode == "square":
            # Grow the window so that, once warped to crop x crop, `pad` pixels of context
            # surround it; clip to the image and remember how much was cut on each side.
            context_scale = f32(crop) / f32(crop - 2 * pad)
            half_h, half_w = f32((y2 - y1 + 1) / 2.0), f32((x2 - x1 + 1) / 2.0)
            cx, cy = f32(x1) + half_w, f32(y1) + half_h
            if self.p.crop_mode == "square":
                half_h = half_w = max(half_h, half_w)
            x1, x2 = _round(cx - half_w * context_scale), _round(cx + half_w * context_scale)
            y1, y2 = _round(cy - half_h * context_scale), _round(cy + half_h * context_scale)
            unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
            pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
            pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
            scale_x, scale_y = f32(crop) / f32(unclipped_w), f32(crop) / f32(unclipped_h)
            out_w = _round(f32(x2 - x1 + 1) * scale_x)
            out_h = _round(f32(y2 - y1 + 1) * scale_y)
            pad_x1, pad_x2 = _round(f32(pad_x1) * scale_x), _round(f32(pad_x2) * scale_x)
            pad_h = _round(f32(pad_y1) * scale_y)
            pad_w = pad_x2 if do_mirror else pad_x1
            out_h, out_w = min(out_h, crop - pad_h), min(out_w, crop - pad_w)
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows) or out_h <= 0 or out_w <= 0:
            raise DataError(f"window ({x1}, {y1}, {x2}, {y2}) does not fit image "
                            f"'{self.images[index][0]}' ({cols}x{rows})")
        warped = resize_linear(img[y1:y2 + 1, x1:x2 + 1], out_h, out_w)
        if do_mirror:
            warped = warped[:, ::-1]
        pixels = hwc_to_chw(warped).astype(self.dtype)
        region = (slice(None), slice(pad_h, pad_h + out_h), slice(pad_w, pad_w + out_w))
        if self.mean is not None:
            off = (self.mean.shape[2] - crop) // 2
            pixels -= self.mean[:, off + pad_h:off + pad_h + out_h, off + pad_w:off + pad_w + out_w]
        elif len(self.mean_values):
            pixels -= self.mean_values.reshape(-1, 1, 1)
        out[region] = pixels * self.dtype(self.scale)


def _round(x):
    """C's round(): halves away from zero."""
    return int(np.sign(x) * np.floor(np.abs(x) + 0.5))


_TOKEN = re.compile(r"\S+")


@register_layer
class WindowDataLayer(BasePrefetchingDataLayer):
    """R-CNN windows from window_data_param.source, warped to crop_size: data and label.

    Window file: repeated `# image_index`, image path, channels, height, width, num_windows,
    then num_windows lines `class_index overlap x1 y1 x2 y2`. Windows with overlap >=
    fg_threshold are foreground (keeping their class), below bg_threshold background (label 0).
    """

    type = "WindowData"
    exact_num_top_blobs = 2

    def make_source(self, top):
        p, t = self.param.window_data_param, self.param.transform_param
        # transform_param is Caffe's home for these; the window_data_param copies are older.
        crop = t.crop_size if t.HasField("crop_size") else p.crop_size
        mirror = t.mirror if t.HasField("mirror") else p.mirror
        mean_file = t.mean_file if t.HasField("mean_file") else p.mean_file
        scale = p.scale if p.HasField("scale") else t.scale
        if crop <= 0:
            self.fail("crop_size must be positive (the size windows are warped to)")
        if not p.batch_size:
            self.fail("window_data_param.batch_size must be positive")
        if p.crop_mode not in ("warp", "square"):
            self.fail(f"crop_mode must be 'warp' or 'square', not '{p.crop_mode}'")
        if 2 * p.context_pad >= crop:
            self.fail(f"context_pad {p.context_pad} leaves no room in crop_size {crop}")
        images, fg, bg = self._read_windows(p)
        channels = images[min(images)][1][0]
        if channels not in (1, 3):
            # Images are decoded grey or BGR: any other count could not fill the top.
            self.fail(f"window file '{p.source}': image {min(images)} declares {channels} "
                      f"channels; Caffe reads images with 1 or 3")
        num_fg = int(np.float32(p.batch_size) * np.float32(p.fg_fraction))
        if num_fg and not fg:
            self.fail(f"no foreground windows (overlap >= fg_threshold {p.fg_threshold})")
        if p.batch_size - num_fg and not bg:
            self.fail(f"no background windows (overlap < bg_threshold {p.bg_threshold})")
        dtype = np_dtype(self.dtype)
        mean, mean_values = None, np.asarray(t.mean_value, dtype=dtype)
        if mean_file and len(mean_values):
            self.fail("specify either mean_file or mean_value, not both")
        if mean_file:
            mean = load_mean(mean_file).astype(dtype)
            # Caffe centres the crop in the mean by its width, for rows and columns alike.
            off = (mean.shape[2] - crop) // 2
            if mean.shape[0] != channels or off < 0 or mean.shape[1] < off + crop:
                self.fail(f"mean_file is {'x'.join(map(str, mean.shape))} but windows are "
                          f"warped to {channels}x{crop}x{crop}; the mean must have {channels} "
                          f"channels and be at least crop_size square")
        if len(mean_values) not in (0, 1, channels):
            self.fail(f"give 1 mean_value or one per channel ({channels}), not {len(mean_values)}")
        top[0].reshape((p.batch_size, channels, crop, crop))
        top[1].reshape((p.batch_size,))
        return _WindowSource(self.param, images, fg, bg, crop, mirror, scale, mean, mean_values,
                             draw_seed(), dtype, channels)

    def _read_windows(self, p):
        text = formats.read_text_file(p.source, "window file", DataError)
        read = [0]                      # tokens read so far, kept by _parse_windows
        try:
            return self._parse_windows(p, text, read)
        except (DataError, ValueError) as e:
            # The line of the last token read; found only when the file is wrong.
            line = _token_line(text, read[0])
            detail = f"not a number: {e}" if isinstance(e, ValueError) else str(e)
            raise DataError(f"window file '{p.source}' line {line}: {detail}") from None

    def _parse_windows(self, p, text, read):
        tokens = text.split()
        if not tokens:
            raise DataError("the file is empty")
        images, fg, bg, pos = {}, [], [], 0

        def take(n, what):
            nonlocal pos
            if pos + n > len(tokens):
                read[0] = len(tokens)
                raise DataError(f"the file ends in the middle of {what}")
            pos += n
            read[0] = pos
            return tokens[pos - n:pos]

        while pos < len(tokens):
            mark, index = take(2, "an image header")
            if mark != "#":
                raise DataError(f"expected '# image_index', "
                                f"found '{mark} {index}'")
            index = int(index)
            path = p.root_folder + take(1, "an image header")[0]
            size = tuple(int(v) for v in take(3, "an image size"))
            images[index] = (path, size)
            for _ in range(int(take(1, "a window count")[0])):
                label, overlap, x1, y1, x2, y2 = take(6, "a window")
                window = [index, int(label), float(overlap), int(x1), int(y1), int(x2),
                          int(y2)]
                if not all(-2 ** 31 <= v < 2 ** 31 for v in window[3:]):
                    # Caffe reads them as ints; beyond, the warp arithmetic overflows.
                    raise DataError(f"window {window[3:]} of "
                                    f"image {index} does not fit 32-bit coordinates")
                if window[2] >= p.fg_threshold:
                    if window[1] <= 0:
                        raise DataError(f"foreground window of "
                                        f"image {index} has class {window[1]}; foreground "
                                        f"classes start at 1")
                    fg.append(window)
                elif window[2] < p.bg_threshold:
                    window[1], window[2] = 0, 0.0
                    bg.append(window)
        log.info("Window data: %d images, %d foreground and %d background windows",
                 len(images), len(fg), len(bg))
        return images, fg, bg


def _token_line(text, count):
    """The line (from 1) of the count-th whitespace-separated token of text (the last if past)."""
    offset = 0
    for token in _TOKEN.finditer(text):
        offset = token.start()
        count -= 1
        if count <= 0:
            break
    return text.count("\n", 0, offset) + 1
