"""Softmax, MVN and BatchNorm: numerical gradients, reference formulas, running statistics."""
import pytest
import torch

import caffe.layers.normalization  # noqa: F401  (registers the family until the catalog lists it)
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2
from caffe.testing import check_gradient, make_layer, random_blob

SHAPE = (2, 3, 4, 3)


def run(layer, bottom, top=None):
    top = top or Blob((), torch.float64, bottom.device)
    layer.layer_setup([bottom], [top])
    layer.forward([bottom], [top])
    return top


@pytest.mark.parametrize("axis", [1, 0, 3, -1])
def test_softmax_gradient(device, axis):
    layer = make_layer(f'type: "Softmax" softmax_param {{ axis: {axis} }}', device=device)
    check_gradient(layer, [random_blob(SHAPE, -2, 2, device=device)])


def test_softmax_forward_and_in_place(device):
    x = random_blob(SHAPE, -5, 5, device=device)
    dy = random_blob(SHAPE, device=device, generator=torch.Generator().manual_seed(4))
    text = 'type: "Softmax" softmax_param { axis: 2 }'
    layer = make_layer(text, device=device)
    top = run(layer, x)
    torch.testing.assert_close(top.data, torch.softmax(x.data, 2))
    top.diff.copy_(dy.data)
    layer.backward([top], [True], [x])
    same = random_blob(SHAPE, values=x.data.cpu().numpy(), device=device)
    layer = make_layer(text, device=device)
    run(layer, same, same)
    torch.testing.assert_close(same.data, top.data)
    same.diff.copy_(dy.data)
    layer.backward([same], [True], [same])
    torch.testing.assert_close(same.diff, x.diff)


MVN = [
    "",
    "mvn_param { across_channels: true }",
    "mvn_param { normalize_variance: false }",
    "mvn_param { across_channels: true normalize_variance: false }",
]


@pytest.mark.parametrize("settings", MVN)
@pytest.mark.parametrize("shape", [SHAPE, (3, 4)])
def test_mvn_gradient(device, settings, shape):
    if shape == (3, 4) and "across" not in settings:
        shape = (3, 4, 5)  # per-channel statistics of a 2-D blob are over one value
    layer = make_layer(f'type: "MVN" {settings}', device=device)
    check_gradient(layer, [random_blob(shape, -1, 1, device=device)])


def test_mvn_formula_eps_on_std(device):
    x = random_blob(SHAPE, -1, 3, device=device)
    top = run(make_layer('type: "MVN" mvn_param { eps: 0.5 }', device=device), x)
    mean = x.data.mean((2, 3), keepdim=True)
    std = (x.data - mean).pow(2).mean((2, 3), keepdim=True).sqrt()
    torch.testing.assert_close(top.data, (x.data - mean) / (std + 0.5))
    top = run(make_layer('type: "MVN" mvn_param { across_channels: true }', device=device), x)
    mean = x.data.mean((1, 2, 3), keepdim=True)
    std = (x.data - mean).pow(2).mean((1, 2, 3), keepdim=True).sqrt()
    torch.testing.assert_close(top.data, (x.data - mean) / (std + 1e-9))


@pytest.mark.parametrize("settings", ["", "moving_average_fraction: 0.5 eps: 0.01"])
def test_batchnorm_train_gradient(device, settings):
    layer = make_layer(f'type: "BatchNorm" batch_norm_param {{ {settings} }}', device=device)
    check_gradient(layer, [random_blob(SHAPE, -1, 2, device=device)])


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 5)])
def test_batchnorm_gradient_other_shapes(device, shape):
    layer = make_layer('type: "BatchNorm"', device=device)
    check_gradient(layer, [random_blob(shape, -1, 2, device=device)])


def stored_stats_layer(device, text, phase=caffe_pb2.TRAIN):
    layer = make_layer(text, device=device, phase=phase)
    bottom, top = random_blob(SHAPE, -1, 2, device=device), Blob((), torch.float64, device)
    layer.layer_setup([bottom], [top])
    layer.blobs[0].data.copy_(torch.tensor([0.2, -0.4, 1.0]))
    layer.blobs[1].data.copy_(torch.tensor([1.0, 0.5, 2.0]))
    layer.blobs[2].data.fill_(2.0)
    return layer, bottom, top


def test_batchnorm_global_stats_gradient_and_formula(device):
    layer, bottom, top = stored_stats_layer(
        device, 'type: "BatchNorm" batch_norm_param { use_global_stats: true eps: 0.1 }')
    check_gradient(layer, [bottom], top=[top])
    mean = torch.tensor([0.1, -0.2, 0.5], dtype=torch.float64, device=device).view(1, 3, 1, 1)
    var = torch.tensor([0.5, 0.25, 1.0], dtype=torch.float64, device=device).view(1, 3, 1, 1)
    eps = float(layer.param.batch_norm_param.eps)
    torch.testing.assert_close(top.data, (bottom.data - mean) / (var + eps).sqrt())


def test_batchnorm_test_phase_uses_stored_stats(device):
    layer, bottom, top = stored_stats_layer(device, 'type: "BatchNorm"', caffe_pb2.TEST)
    before = [b.data.clone() for b in layer.blobs]
    layer.forward([bottom], [top])
    for b, old in zip(layer.blobs, before):
        assert torch.equal(b.data, old)  # TEST never updates the statistics
    assert layer.use_global_stats
    # use_global_stats: false overrides the phase default.
    layer, bottom, top = stored_stats_layer(
        device, 'type: "BatchNorm" batch_norm_param { use_global_stats: false }', caffe_pb2.TEST)
    layer.forward([bottom], [top])
    assert layer.blobs[2].data.item() == pytest.approx(0.999 * 2 + 1)


def test_batchnorm_zero_scale_factor_means_zero_stats(device):
    layer, bottom, top = stored_stats_layer(
        device, 'type: "BatchNorm" batch_norm_param { use_global_stats: true }')
    layer.blobs[2].data.zero_()
    layer.forward([bottom], [top])
    eps = float(layer.param.batch_norm_param.eps)
    torch.testing.assert_close(top.data, bottom.data / eps ** 0.5)


def test_batchnorm_running_statistics_by_hand(device):
    """Two TRAIN forwards from zero, against sums written out by hand."""
    layer = make_layer('type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.5 }',
                       device=device)
    # Two samples, two channels, two positions: channel c sees four values.
    x1 = [[[1.0, 3.0], [0.0, 0.0]], [[5.0, 7.0], [2.0, -2.0]]]
    x2 = [[[2.0, 2.0], [1.0, 1.0]], [[2.0, 2.0], [1.0, 5.0]]]
    bottom = random_blob((2, 2, 2), values=x1, device=device)
    top = run(layer, bottom)
    # channel 0: 1 3 5 7, mean 4, biased var (9+1+1+9)/4 = 5, unbiased 20/3.
    # channel 1: 0 0 2 -2, mean 0, biased var 8/4 = 2, unbiased 8/3.
    expected = [torch.tensor(v, dtype=torch.float64) for v in ([4, 0], [20 / 3, 8 / 3], [1])]
    for blob, want in zip(layer.blobs, expected):
        torch.testing.assert_close(blob.data.cpu(), want)
    eps = float(layer.param.batch_norm_param.eps)
    torch.testing.assert_close(top.data[0, 0], (torch.tensor([1.0, 3.0], dtype=torch.float64,
                                                             device=device) - 4) / (5 + eps) ** 0.5)
    bottom.data.copy_(torch.tensor(x2))
    layer.forward([bottom], [top])
    # channel 0: 2 2 2 2, mean 2, var 0; channel 1: 1 1 1 5, mean 2, unbiased var 12/3 = 4.
    expected = [[2 + 0.5 * 4, 2 + 0.5 * 0], [0 + 0.5 * 20 / 3, 4 + 0.5 * 8 / 3], [1 + 0.5 * 1]]
    for blob, want in zip(layer.blobs, expected):
        torch.testing.assert_close(blob.data.cpu(), torch.tensor(want, dtype=torch.float64))


def test_batchnorm_hides_statistics_from_the_solver():
    layer = make_layer('type: "BatchNorm"')
    layer.layer_setup([random_blob(SHAPE)], [Blob((), torch.float64)])
    assert [p.lr_mult for p in layer.param.param] == [0, 0, 0]
    assert layer.param_propagate_down == [False, False, False]
    bad = make_layer('type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 1 }')
    with pytest.raises(LayerSetupError, match="layer 'layer'.*lr_mult"):
        bad.layer_setup([random_blob(SHAPE)], [Blob((), torch.float64)])


def test_batchnorm_in_place_matches_out_of_place(device):
    x = random_blob(SHAPE, -1, 2, device=device)
    dy = random_blob(SHAPE, device=device, generator=torch.Generator().manual_seed(4))
    layer = make_layer('type: "BatchNorm"', device=device)
    top = run(layer, x)
    top.diff.copy_(dy.data)
    layer.backward([top], [True], [x])
    same = random_blob(SHAPE, values=x.data.cpu().numpy(), device=device)
    layer = make_layer('type: "BatchNorm"', device=device)
    run(layer, same, same)
    torch.testing.assert_close(same.data, top.data)
    same.diff.copy_(dy.data)
    layer.backward([same], [True], [same])
    torch.testing.assert_close(same.diff, x.diff)


def test_batchnorm_channel_mismatch_fails():
    layer = make_layer('type: "BatchNorm"')
    bottom, top = random_blob(SHAPE), Blob((), torch.float64)
    layer.layer_setup([bottom], [top])
    with pytest.raises(LayerSetupError, match="channels"):
        layer.reshape([random_blob((2, 4, 3))], [top])
