"""Spatial coordinate maps between NetSpec tops, and Crop layers that align them.

A map (axis, a, b) says: a coordinate x in the input of a layer lands at a * x + b in its
output, along every spatial axis from `axis` on (a and b are arrays, one entry per axis;
axis None means the map does not depend on the axis, as for pointwise layers). Fully
convolutional nets use `crop(top, reference)` to cut an upsampled score map back onto the
input's pixel grid.
"""
import numpy as np

from .errors import CaffeError
from .net_spec import layers as L

PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU",
                       "Log", "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale",
                       "Sigmoid", "Split", "TanH", "Threshold"]

IDENTITY = (None, 1, 0)


class UndefinedMapException(CaffeError):
    """A layer whose output coordinates do not follow from its input coordinates."""


class AxisMismatchException(CaffeError):
    """Two maps over different first spatial axes cannot be composed."""


class UnconnectedTopsError(CaffeError, RuntimeError):
    """The two tops share no ancestor reachable through spatial layers."""


class CropError(CaffeError, AssertionError):
    """The crop asked for is impossible (different scales, negative or fractional offset).

    pycaffe raised AssertionError here, so scripts catching that still work."""


class LegacyParamsError(CaffeError, AssertionError):
    """A layer on the path sets kernel/stride/pad by the legacy _h/_w fields, which maps do
    not read (pycaffe asserted here: an AssertionError, and the walk stops)."""


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a Convolution-like or Pooling layer,
    from its convolution_param (or pooling_param) dict or its keyword arguments."""
    params = fn.params.get("convolution_param", fn.params.get("pooling_param", fn.params))
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & set(params)
    if legacy:
        raise LegacyParamsError(f"{fn.type_name}: cropping does not support the legacy _h/_w "
                                f"parameters ({', '.join(sorted(legacy))}); use "
                                f"kernel_size/stride/pad lists")
    if params.get("global_pooling") or "kernel_size" not in params:
        raise UndefinedMapException(f"{fn.type_name}: no kernel_size, so no spatial map")
    kernel = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    return (params.get("axis", 1), np.array(params.get("stride", 1), ndmin=1),
            (kernel - 1) * dilation + 1, np.array(params.get("pad", 0), ndmin=1))


def crop_params(fn):
    """(axis, offset) of a Crop layer, with Crop's defaults (axis 2, offset 0)."""
    params = fn.params.get("crop_param", fn.params)
    return params.get("axis", 2), np.array(params.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The (axis, scale, shift) map from a layer's input coordinates to its output's."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = conv_params(fn)
        # Output pixel i sees inputs stride*i - pad .. stride*i - pad + extent - 1;
        # map the input to the centre of that window.
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return IDENTITY
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        # Crop's axis counts the channel axis; the maps' axis is the one before the first
        # spatial axis (1 for N x C x H x W), as Convolution's axis is.
        return axis - 1, 1, -offset
    raise UndefinedMapException(f"{fn.type_name} layers have no coordinate map")


def compose(base_map, next_map):
    """Chain two maps: the scales multiply and the further shift is scaled by the base
    scale."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException(f"cannot compose maps over axis {ax1} and axis {ax2}")
    return ax, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map back: undo the shift, then the scale."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _mapped_bottoms(top):
    # Crop's second bottom only gives the output size; its coordinates are not mapped.
    inputs = top.fn.inputs
    return inputs[:1] if top.fn.type_name == "Crop" else inputs


def _ancestor_maps(top):
    """{ancestor top: map from the ancestor to `top`}, walking back through spatial layers."""
    maps, frontier = {top: IDENTITY}, [top]
    while frontier:
        current = frontier.pop()
        try:
            step = coord_map(current.fn)
        except UndefinedMapException:
            continue
        for bottom in _mapped_bottoms(current):
            if bottom not in maps:
                maps[bottom] = compose(maps[current], step)
                frontier.append(bottom)
    return maps


def coord_map_from_to(top_from, top_to):
    """The (axis, scale, shift) map taking coordinates of `top_from` to those of `top_to`,
    through their nearest common ancestor."""
    from_maps = _ancestor_maps(top_from)
    to_maps, frontier = {top_to: IDENTITY}, [top_to]
    while frontier:
        current = frontier.pop(0)   # breadth first: the nearest common ancestor
        if current in from_maps:
            return compose(to_maps[current], inverse(from_maps[current]))
        try:
            step = coord_map(current.fn)
        except UndefinedMapException:
            continue
        for bottom in _mapped_bottoms(current):
            if bottom not in to_maps:
                to_maps[bottom] = compose(to_maps[current], step)
                frontier.append(bottom)
    raise UnconnectedTopsError("Could not compute map between tops; are they connected by "
                               "spatial layers?")


def crop(top_from, top_to):
    """A Crop layer cutting `top_from` to the size and position of `top_to`."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not (a == 1).all():
        raise CropError(f"scale mismatch on crop (a = {a}): the tops are at different "
                        f"resolutions")
    if not (b <= 0).all():
        raise CropError(f"cannot crop negative offset (b = {b}): {top_from} is smaller than "
                        f"the reference")
    if not (np.round(b) == b).all():
        raise CropError(f"cannot crop noninteger offset (b = {b})")
    # A map through pointwise layers only has no axis: crop the spatial axes.
    axis = 2 if ax is None else ax + 1
    return L.Crop(top_from, top_to,
                  crop_param=dict(axis=axis, offset=[int(o) for o in -np.round(b).ravel()]))
