import numpy as np
import pytest
import torch

from caffe.blob import Blob, PyBlob
from caffe.errors import CaffeError


def test_reshape_keeps_storage_when_it_fits():
    b = Blob((2, 3, 4))
    assert b.count() == 24 and b.count(1) == 12 and b.count(1, 2) == 3
    assert (b.num, b.channels, b.height, b.width) == (2, 3, 4, 1)
    b.data[...] = torch.arange(24.0).view(2, 3, 4)
    b.reshape(4, 6)
    assert b.shape == (4, 6)
    assert b.data.flatten().tolist() == list(range(24))
    b.reshape((5, 5))
    assert b.shape == (5, 5) and b.data.abs().sum() == 0


def test_numpy_view_shares_memory(device):
    b = Blob((2, 3), device=device)
    view = PyBlob(b)
    view.data[...] = np.arange(6).reshape(2, 3)
    assert b.data.sum().item() == 15
    b.diff.fill_(2)
    assert view.diff.sum() == 12


def test_canonical_axis_and_errors():
    b = Blob((2, 3, 4))
    assert b.canonical_axis_index(-1) == 2
    with pytest.raises(CaffeError):
        b.canonical_axis_index(3)
    with pytest.raises(CaffeError, match="limit"):
        Blob((10 ** 6, 10 ** 6))
    with pytest.raises(CaffeError):
        Blob((-1, 2))


def test_share_data_and_diff():
    a, b = Blob((2, 3)), Blob((3, 2))
    b.share_data(a)
    b.share_diff(a)
    a.data.fill_(7)
    b.diff.fill_(1)
    assert b.data.sum() == 42 and a.diff.sum() == 6
