"""caffe.vis: tiling, normalisation, plots, top-k and the Jupyter representation of a Net."""
import numpy as np
import pytest
from PIL import Image

import caffe
from caffe import vis
from caffe.errors import CaffeError

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def test_vis_square_lays_tiles_on_a_square_grid():
    data = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    grid = vis.vis_square(data, padsize=1, padval=1.0, normalize="global")
    # ceil(sqrt(5)) = 3 tiles a side, each (2 + 1) x (3 + 1) with the last padding cut.
    assert grid.shape == (3 * 3 - 1, 3 * 4 - 1)
    assert grid.min() == 0.0 and grid.max() == 1.0
    np.testing.assert_allclose(grid[:2, :3], data[0] / 29)          # first tile, global scale
    np.testing.assert_allclose(grid[3:5, 4:7], data[4] / 29)        # tile 4: row 1, column 1
    assert (grid[2, :] == 1.0).all() and (grid[6:, 4:] == 1.0).all()  # padding and empty cells


def test_per_tile_normalisation_uses_each_tiles_range():
    data = np.stack([np.array([[0.0, 1.0]]), np.array([[10.0, 30.0]]), np.ones((1, 2))])
    grid = vis.vis_square(data, padsize=0, normalize="tile")
    np.testing.assert_allclose(grid[0, :4], [0, 1, 0, 1])
    np.testing.assert_allclose(grid[1, :2], [0, 0])                  # a constant tile is black
    with pytest.raises(CaffeError, match="normalize"):
        vis.vis_square(data, normalize="per-pixel")
    with pytest.raises(CaffeError, match="shape"):
        vis.vis_square(np.zeros((2, 3)))


def test_filters_and_activations_grids():
    weights = np.random.default_rng(0).normal(size=(4, 3, 5, 5))
    colour = vis.filters_grid(weights)
    assert colour.shape == (2 * 6 - 1, 2 * 6 - 1, 3)
    # BGR weights are shown as RGB: channel 0 (blue) lands in the image's last channel.
    tile = weights[0].transpose(1, 2, 0)
    low, high = tile.min(), tile.max()
    np.testing.assert_allclose(colour[:5, :5, 2], (tile[..., 0] - low) / (high - low))
    grey = vis.filters_grid(np.ones((2, 4, 3, 3)))
    assert grey.shape == (3 * 4 - 1, 3 * 4 - 1)                      # 8 kernels on 3 x 3
    maps = vis.activations_grid(np.random.default_rng(1).random((2, 9, 4, 4)), item=1)
    assert maps.shape == (3 * 5 - 1, 3 * 5 - 1)


def test_png_histogram_and_top_k(tmp_path):
    grid = vis.vis_square(np.random.default_rng(2).random((4, 6, 6)))
    path = vis.save_png(grid, str(tmp_path / "g.png"), min_size=100)
    image = Image.open(path)
    assert image.size == (13 * 8, 13 * 8) and image.mode == "L"      # enlarged x8 to >= 100
    hist = vis.blob_histogram(np.random.default_rng(3).normal(size=1000), str(tmp_path / "h.png"))
    assert np.asarray(Image.open(hist).convert("L")).std() > 10      # something was drawn
    labels = ["cat", "dog", "car", "tree"]
    best = vis.top_k(np.array([0.1, 0.6, 0.05, 0.25]), labels, k=3)
    assert best == [("dog", 0.6), ("tree", 0.25), ("cat", 0.1)]
    assert vis.top_k([0.2, 0.8], k=1) == [("class 1", 0.8)]
    with pytest.raises(CaffeError, match="4 labels for 2 classes"):
        vis.top_k([0.2, 0.8], labels)
    assert Image.open(vis.plot_top_k(best, str(tmp_path / "top.png"))).size[0] > 100


def test_a_net_displays_in_jupyter(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    page = net._repr_html_()
    for text in ("Net 'tiny'", "conv1", "Convolution", "2 &times; 5 &times; 6 &times; 6",
                 "5 &times; 3 &times; 3 &times; 3", "prob"):
        assert text in page
    svg = net._repr_svg_()
    import shutil
    if shutil.which("dot") is None:
        assert svg is None and "<svg" not in page
    else:
        assert svg.lstrip().startswith("<?xml") or "<svg" in svg
        assert "conv1" in svg and "<svg" in page


def test_display_graph_folds_automatic_splits(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET + """
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
""")
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    assert any(layer.type == "Split" for layer in net.param.layer)   # ip feeds prob and loss
    shown = vis.display_param(net)
    assert not any(layer.type == "Split" for layer in shown.layer)
    loss = [layer for layer in shown.layer if layer.name == "loss"][0]
    assert list(loss.bottom) == ["ip", "label"]
