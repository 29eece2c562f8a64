"""Caffe's window and broadcast geometry as plain numbers, shared by both exporters (the
pooling geometry is the Pooling and SPP layers' own, from caffe.layers.pooling)."""
from ..layers.pooling import (AVE, FLT_MAX, FLT_MIN, MAX, STOCHASTIC, Windows,  # noqa: F401
                              ave_divisor, pool_windows, spp_levels)

__all__ = ["AVE", "FLT_MAX", "FLT_MIN", "MAX", "STOCHASTIC", "Windows", "pool_windows",
           "ave_divisor", "spp_levels", "broadcast_shape"]

def broadcast_shape(x_shape, operand_shape, axis):
    """operand's shape padded with trailing 1s so that it lines up with x from `axis`
    (Scale and Bias layers) under NumPy-style broadcasting."""
    n = len(x_shape)
    axis = 0 if not operand_shape else (axis + n if axis < 0 else axis)
    return tuple(operand_shape) + (1,) * (n - axis - len(operand_shape))
