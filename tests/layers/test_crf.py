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


def test_multi_stage_meanfield_gradient():
    from caffe.testing import check_gradient
    layer = make_layer('type: "MultiStageMeanfield" multi_stage_meanfield_param { '
                       'num_iterations: 3 theta_alpha: 4 theta_beta: 0.5 theta_gamma: 2 '
                       'spatial_filter_weight: 2 bilateral_filter_weight: 3 }')
    g = torch.Generator().manual_seed(3)
    unary = random_blob((2, 3, 4, 5), -2, 2)
    first = random_blob((2, 3, 4, 5), -2, 2, generator=g)
    image = random_blob((2, 3, 4, 5), generator=torch.Generator().manual_seed(5))
    check_gradient(layer, [unary, first, image], check_bottom=[0, 1], threshold=1e-4)


def test_multi_stage_meanfield_first_step_is_the_formula():
    """With W_s = W_b = 0 the output is the unaries whatever the messages."""
    layer = make_layer('type: "MultiStageMeanfield" multi_stage_meanfield_param { '
                       'num_iterations: 2 spatial_filter_weight: 0 bilateral_filter_weight: 0 }',
                       dtype=torch.float32)
    unary = random_blob((1, 3, 4, 5), dtype=torch.float32)
    image = random_blob((1, 3, 4, 5), dtype=torch.float32)
    top = Blob((), torch.float32)
    layer.layer_setup([unary, unary, image], [top])
    layer.forward([unary, unary, image], [top])
    torch.testing.assert_close(top.data, unary.data)
