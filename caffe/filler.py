"""Fillers: the initial values of learned blobs, named by FillerParameter.type."""
import math

import torch

from .errors import LayerSetupError
from .proto import caffe_pb2

_NORM = caffe_pb2.FillerParameter


def _fans(shape):
    count = math.prod(shape)
    fan_in = count // shape[0] if shape and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _scale_base(p, shape):
    fan_in, fan_out = _fans(shape)
    if p.variance_norm == _NORM.FAN_OUT:
        return fan_out
    if p.variance_norm == _NORM.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def _constant(t, p):
    t.fill_(p.value)


def _uniform(t, p):
    if not (math.isfinite(p.min) and math.isfinite(p.max) and p.min <= p.max):
        raise LayerSetupError(f"uniform filler needs finite min <= max, got [{p.min}, {p.max}]")
    t.uniform_(p.min, p.max)


def _gaussian(t, p):
    if not (p.std >= 0 and math.isfinite(p.std) and math.isfinite(p.mean)):
        raise LayerSetupError(f"gaussian filler needs a finite mean and std >= 0, got mean "
                              f"{p.mean}, std {p.std}")
    t.normal_(p.mean, p.std)
    if p.sparse >= 0:
        # Each output keeps on average `sparse` non-zero inputs.
        if t.dim() < 1 or t.shape[0] == 0:
            raise LayerSetupError("sparse gaussian filler needs a blob with at least one axis")
        keep = torch.rand_like(t) < p.sparse / t.shape[0]
        t.mul_(keep)


def _positive_unitball(t, p):
    t.uniform_(0, 1)
    rows = t.view(t.shape[0], -1) if t.dim() else t.view(1, -1)
    rows.div_(rows.sum(dim=1, keepdim=True))


def _xavier(t, p):
    scale = math.sqrt(3.0 / _scale_base(p, t.shape))
    t.uniform_(-scale, scale)


def _msra(t, p):
    t.normal_(0.0, math.sqrt(2.0 / _scale_base(p, t.shape)))


def _bilinear(t, p):
    # Upsampling kernel for Deconvolution: a separable tent centred on each output.
    if t.dim() != 4 or t.shape[2] != t.shape[3]:
        raise LayerSetupError(f"bilinear filler needs a 4-D blob with square kernels, got {tuple(t.shape)}")
    k = t.shape[3]
    f = math.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    r = 1 - (torch.arange(k, dtype=torch.float64) / f - c).abs()
    t.copy_((r[:, None] * r[None, :]).expand_as(t))


FILLERS = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


def fill(tensor, filler_param):
    """Fill `tensor` in place as the FillerParameter says."""
    try:
        filler = FILLERS[filler_param.type]
    except KeyError:
        raise LayerSetupError(f"unknown filler type '{filler_param.type}'; known: "
                              f"{', '.join(sorted(FILLERS))}") from None
    with torch.no_grad():
        if tensor.numel():
            filler(tensor, filler_param)
    return tensor
