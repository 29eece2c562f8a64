"""DenseCRF (PSPNet / DeepLab): the fork's fast_exp, the lattice's Gaussian, Q's properties.
Its numbers against the fork's build: tests/golden_forks/densecrf_* (test_golden_forks)."""
import numpy as np
import torch

from caffe.blob import Blob
from caffe.layers.crf import fast_exp
from caffe.layers.permutohedral import Permutohedral
from caffe.testing import make_layer, random_blob


def test_fast_exp_approximates_exp():
    x = np.linspace(-19.5, 0, 2001, dtype=np.float32)
    np.testing.assert_allclose(fast_exp(x), np.exp(x), rtol=2e-3, atol=1e-9)
    assert fast_exp(np.float32(-21)) == 0


def test_lattice_is_a_normalised_gaussian_blur():
    """Filtering ones with a large spatial std: nearly constant in the middle of the image."""
    rows, cols = np.mgrid[0:20, 0:20].astype(np.float32)
    lattice = Permutohedral(np.stack([cols.ravel(), rows.ravel()], 1) / 3)
    ones = lattice.compute(np.ones((400, 1), np.float32))[:, 0].reshape(20, 20)
    assert ones[8:12, 8:12].std() / ones[8:12, 8:12].mean() < 0.05
    assert ones[0, 0] < ones[10, 10]           # fewer neighbours at the corner


def test_dense_crf_gives_distributions_inside_the_image():
    layer = make_layer('type: "DenseCRF" dense_crf_param { max_iter: 3 pos_xy_std: 2 pos_w: 3 }',
                       dtype=torch.float32)
    scores = random_blob((1, 4, 6, 7), -2, 2, dtype=torch.float32)
    dims = random_blob((1, 1, 1, 2), dtype=torch.float32, values=[[[[5, 6]]]])
    top = Blob((), torch.float32)
    layer.layer_setup([scores, dims], [top])
    layer.forward([scores, dims], [top])
    q = top.data.numpy()[0]
    np.testing.assert_allclose(q[:, :5, :6].sum(0), 1, rtol=1e-5)
    assert (q[:, 5:] == 0).all() and (q[:, :, 6:] == 0).all()
