import math

import pytest
import torch

from caffe.errors import LayerSetupError
from caffe.filler import fill
from caffe.formats import parse_text
from caffe.proto import caffe_pb2


def filler(text):
    return parse_text(text, caffe_pb2.FillerParameter())


def test_constant_and_uniform():
    t = torch.empty(1000, dtype=torch.float64)
    assert (fill(t, filler('type: "constant" value: 2.5')) == 2.5).all()
    fill(t, filler('type: "uniform" min: -2 max: 3'))
    assert t.min() >= -2 and t.max() <= 3 and abs(t.mean() - 0.5) < 0.2


def test_gaussian_sparse_keeps_expected_fraction():
    t = torch.empty(200, 100, dtype=torch.float64)
    fill(t, filler('type: "gaussian" std: 1 sparse: 50'))
    assert abs((t != 0).double().mean() - 50 / 200) < 0.02


def test_positive_unitball_rows_sum_to_one():
    t = torch.empty(4, 3, 5)
    fill(t, filler('type: "positive_unitball"'))
    assert torch.allclose(t.view(4, -1).sum(1), torch.ones(4)) and (t >= 0).all()


@pytest.mark.parametrize("norm,n", [("FAN_IN", 3 * 5 * 5), ("FAN_OUT", 20 * 5 * 5),
                                    ("AVERAGE", (75 + 500) / 2)])
def test_xavier_and_msra_scales(norm, n):
    t = torch.empty(20, 3, 5, 5, dtype=torch.float64)
    fill(t, filler(f'type: "xavier" variance_norm: {norm}'))
    assert t.abs().max() <= math.sqrt(3 / n) + 1e-12
    fill(t, filler(f'type: "msra" variance_norm: {norm}'))
    assert abs(t.std() - math.sqrt(2 / n)) < 0.1 * math.sqrt(2 / n)


def test_bilinear_kernel():
    t = torch.empty(1, 1, 4, 4, dtype=torch.float64)
    fill(t, filler('type: "bilinear"'))
    row = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64)
    assert torch.allclose(t[0, 0], row[:, None] * row[None, :])


def test_unknown_filler_is_named():
    with pytest.raises(LayerSetupError, match="unknown filler type 'gausian'"):
        fill(torch.empty(3), filler('type: "gausian"'))
