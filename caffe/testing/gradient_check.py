"""Numerical gradient checking in float64, as Caffe's GradientChecker.

The objective is L = sum_i <top_i, G_i> with a fixed random G_i per top. The layer's
backward, given top diffs G_i, must produce dL/dbottom and dL/dparam; we compare with
central differences over every element, skipping a band around kinks.
"""
import numpy as np
import torch

from ..blob import Blob
from ..formats import parse_text
from ..layers import create_layer
from ..proto import caffe_pb2


def layer_param(text, name="layer", phase=caffe_pb2.TRAIN):
    """A LayerParameter from prototxt text (the body of a `layer { ... }`)."""
    param = parse_text(text, caffe_pb2.LayerParameter(), f"layer_param({name!r})")
    if not param.name:
        param.name = name
    if not param.HasField("phase"):
        param.phase = phase
    return param


def make_layer(text_or_param, dtype=torch.float64, device="cpu", phase=caffe_pb2.TRAIN):
    param = text_or_param
    if isinstance(param, str):
        param = layer_param(param, phase=phase)
    return create_layer(param, dtype=dtype, device=device)


def random_blob(shape, low=-1.0, high=1.0, dtype=torch.float64, device="cpu", generator=None,
                values=None):
    """A blob of uniform random values in [low, high) (or the given values)."""
    blob = Blob(shape, dtype, device)
    if values is not None:
        blob.data.copy_(torch.as_tensor(np.asarray(values), dtype=dtype))
    else:
        g = generator or torch.Generator().manual_seed(1701)
        blob.data.copy_(torch.rand(shape, generator=g, dtype=dtype) * (high - low) + low)
    return blob


def _num_tops(layer, num_tops):
    if num_tops is not None:
        return num_tops
    if layer.exact_num_top_blobs >= 0:
        return layer.exact_num_top_blobs
    return max(layer.min_top_blobs, 1)


def check_gradient(layer, bottom, num_tops=None, step=1e-4, threshold=1e-5, kink=0.0,
                   kink_range=-1.0, check_bottom=None, check_params=True, seed=1701, top=None):
    """Check `layer`'s backward against central differences; raise AssertionError if off.

    check_bottom: indices of bottoms to check (default all); labels and other
    non-differentiable inputs should be left out. Returns the number of checked elements.
    """
    dtype, device = bottom[0].dtype if bottom else layer.dtype, layer.device
    if top is None:
        top = [Blob((), dtype, device) for _ in range(_num_tops(layer, num_tops))]
        layer.layer_setup(bottom, top)
    check_bottom = range(len(bottom)) if check_bottom is None else list(check_bottom)

    def forward():
        torch.manual_seed(seed)   # random layers (dropout, ...) repeat themselves
        layer.reshape(bottom, top)
        layer.forward(bottom, top)

    forward()
    g = torch.Generator().manual_seed(seed + 1)
    weights = [torch.rand(t.shape, generator=g, dtype=torch.float64).to(t.dtype).to(device) * 2 - 1
               for t in top]

    def objective():
        forward()
        return sum(float((t.data.double() * w.double()).sum()) for t, w in zip(top, weights))

    forward()
    for t, w in zip(top, weights):
        t.diff.copy_(w)
    for b in bottom:
        b.diff.zero_()
    for p in layer.blobs:
        p.diff.zero_()
    propagate = [i in check_bottom for i in range(len(bottom))]
    layer.backward(top, propagate, bottom)
    targets = [(f"bottom {i}", bottom[i], bottom[i].diff.clone()) for i in check_bottom]
    if check_params:
        targets += [(f"param {i}", p, p.diff.clone())
                    for i, p in enumerate(layer.blobs)
                    if i >= len(layer.param_propagate_down) or layer.param_propagate_down[i]]
    checked = 0
    for what, blob, analytic in targets:
        flat, grad = blob.data.view(-1), analytic.reshape(-1)
        for k in range(flat.numel()):
            x = float(flat[k])
            if kink_range > 0 and abs(x - kink) < kink_range:
                continue
            flat[k] = x + step
            plus = objective()
            flat[k] = x - step
            minus = objective()
            flat[k] = x
            numeric = (plus - minus) / (2 * step)
            a = float(grad[k])
            scale = max(abs(a), abs(numeric), 1.0)
            if abs(a - numeric) > threshold * scale:
                raise AssertionError(
                    f"layer '{layer.name}' ({layer.type}): {what} element {k}: analytic "
                    f"gradient {a:.8g} vs numeric {numeric:.8g}")
            checked += 1
    forward()
    return checked
