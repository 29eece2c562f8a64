"""Caffe's window and broadcast geometry as plain numbers, shared by both exporters."""
from collections import namedtuple

import numpy as np

from ..layers.pooling import AVE, FLT_MAX, FLT_MIN, MAX, STOCHASTIC, pooled_length

__all__ = ["AVE", "FLT_MAX", "FLT_MIN", "MAX", "STOCHASTIC", "Windows", "pool_windows",
           "ave_divisor", "spp_levels", "broadcast_shape"]

Windows = namedtuple("Windows", "out before after empty")


def pool_windows(kernel, stride, pad, size, ceil=True):
    """Caffe's pooling windows over `size`: the output size, the padding before and after
    each axis that makes the windows tile the padded input exactly (after < 0: rows the
    windows never reach), and whether some window lies wholly outside the input."""
    clip = any(pad)
    out = tuple(pooled_length(n, k, s, p, ceil, clip)
                for n, k, s, p in zip(size, kernel, stride, pad))
    after = tuple((o - 1) * s + k - p - n for o, n, k, s, p in zip(out, size, kernel, stride, pad))
    empty = any((o - 1) * s - p >= n for o, n, s, p in zip(out, size, stride, pad))
    return Windows(out, tuple(pad), after, empty)


def ave_divisor(out, size, kernel, stride, pad):
    """Caffe's AVE divisor for each output: the window clipped to the padded input."""
    sizes = []
    for o, n, k, s, p in zip(out, size, kernel, stride, pad):
        start = np.arange(o) * s - p
        sizes.append(np.minimum(start + k, n + p) - start)
    return np.outer(sizes[0], sizes[1]).astype(np.float64)


def spp_levels(pyramid_height, h, w):
    """(kernel, pad) of each SPP level: level l tiles the input into 2^l x 2^l bins."""
    levels = []
    for level in range(pyramid_height):
        bins = 2 ** level
        kernel = (-(-h // bins), -(-w // bins))
        pad = ((kernel[0] * bins - h + 1) // 2, (kernel[1] * bins - w + 1) // 2)
        levels.append((kernel, pad))
    return levels


def broadcast_shape(x_shape, operand_shape, axis):
    """operand's shape padded with trailing 1s so that it lines up with x from `axis`
    (Scale and Bias layers) under NumPy-style broadcasting."""
    n = len(x_shape)
    axis = 0 if not operand_shape else (axis + n if axis < 0 else axis)
    return tuple(operand_shape) + (1,) * (n - axis - len(operand_shape))
