"""Common (structural) layers: numerical gradients, shapes, bad parameters."""
import numpy as np
import pytest
import torch

import caffe
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from caffe.testing import check_gradient, make_layer, random_blob


def rand(shape, device, seed=0, low=-1.0, high=1.0):
    """Distinct values per seed (random_blob alone repeats one draw for every blob)."""
    return random_blob(shape, low, high, device=device,
                       generator=torch.Generator().manual_seed(seed))


def values(array, device):
    array = np.asarray(array, dtype=np.float64)
    return random_blob(array.shape, values=array, device=device)


def setup(layer, bottom, num_tops=1):
    top = [Blob((), bottom[0].dtype if bottom else torch.float64, layer.device)
           for _ in range(num_tops)]
    layer.layer_setup(bottom, top)
    return top


def run(layer, bottom, num_tops=1):
    top = setup(layer, bottom, num_tops)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return top


def np_of(blob):
    return blob.data.cpu().numpy()


# -- Concat ------------------------------------------------------------------------
@pytest.mark.parametrize("param,shapes,axis", [
    ("", [(2, 3, 2), (2, 1, 2), (2, 2, 2)], 1),
    ("concat_param { axis: 0 }", [(2, 3), (1, 3)], 0),
    ("concat_param { axis: -1 }", [(2, 2, 1), (2, 2, 3)], 2),
    ("concat_param { concat_dim: 0 }", [(1, 2, 2), (2, 2, 2)], 0),
])
def test_concat(device, param, shapes, axis):
    layer = make_layer(f'type: "Concat" {param}', device=device)
    bottom = [rand(s, device, seed=i) for i, s in enumerate(shapes)]
    top = run(layer, bottom)
    np.testing.assert_array_equal(np_of(top[0]), np.concatenate([np_of(b) for b in bottom], axis))
    check_gradient(layer, bottom)


def test_concat_shape_mismatch_names_layer_and_shapes():
    layer = make_layer('name: "cat" type: "Concat" bottom: "a" bottom: "b"')
    with pytest.raises(LayerSetupError, match=r"'cat'.*\(2, 3, 4\).*'b'.*\(2, 2, 5\)"):
        setup(layer, [Blob((2, 3, 4)), Blob((2, 2, 5))])


def test_concat_axis_and_concat_dim_exclusive():
    layer = make_layer('type: "Concat" concat_param { axis: 1 concat_dim: 1 }')
    with pytest.raises(LayerSetupError, match="concat_dim"):
        setup(layer, [Blob((2, 3)), Blob((2, 3))])


# -- Slice -------------------------------------------------------------------------
@pytest.mark.parametrize("param,shape,sizes,axis", [
    ("slice_param { axis: 1 slice_point: 1 slice_point: 4 }", (2, 6, 2), [1, 3, 2], 1),
    ("slice_param { axis: 0 }", (4, 3), [2, 2], 0),
    ("slice_param { axis: -1 }", (2, 2, 6), [2, 2, 2], 2),
    ("slice_param { slice_dim: 0 slice_point: 1 }", (3, 2), [1, 2], 0),
])
def test_slice(device, param, shape, sizes, axis):
    layer = make_layer(f'type: "Slice" {param}', device=device)
    bottom = [rand(shape, device)]
    top = run(layer, bottom, len(sizes))
    expected = np.split(np_of(bottom[0]), np.cumsum(sizes)[:-1], axis)
    for t, e in zip(top, expected):
        np.testing.assert_array_equal(np_of(t), e)
    check_gradient(layer, bottom, num_tops=len(sizes))


@pytest.mark.parametrize("points,tops,message", [
    ("slice_point: 3 slice_point: 2", 3, "strictly increasing"),
    ("slice_point: 2 slice_point: 2", 3, "strictly increasing"),
    ("slice_point: 0", 2, "strictly increasing"),
    ("slice_point: 6", 2, "inside"),
    ("slice_point: 2", 3, "tops"),
    ("", 4, "evenly divide"),
])
def test_slice_bad_points(points, tops, message):
    layer = make_layer(f'name: "sl" type: "Slice" slice_param {{ axis: 1 {points} }}')
    with pytest.raises(LayerSetupError, match=f"'sl'.*{message}"):
        setup(layer, [Blob((2, 6))], tops)


# -- Eltwise -------------------------------------------------------------------------
@pytest.mark.parametrize("param,shape", [
    ("", (2, 36)),
    ("flatten_param { axis: 2 }", (2, 3, 12)),
    ("flatten_param { axis: 1 end_axis: 2 }", (2, 9, 4)),
    ("flatten_param { axis: 0 end_axis: -2 }", (18, 4)),
    ("flatten_param { axis: -1 }", (2, 3, 3, 4)),
])
def test_flatten(device, param, shape):
    layer = make_layer(f'type: "Flatten" {param}', device=device)
    bottom = [rand((2, 3, 3, 4), device)]
    top = run(layer, bottom)
    assert top[0].shape == shape
    np.testing.assert_array_equal(np_of(top[0]), np_of(bottom[0]).reshape(shape))


@pytest.mark.parametrize("param,shape", [
    ("shape { dim: 0 dim: -1 dim: 4 }", (2, 9, 4)),
    ("shape { dim: -1 }", (72,)),
    ("shape { dim: 9 dim: 1 } axis: 1 num_axes: 2", (2, 9, 1, 4)),
    ("shape { dim: -1 } axis: 1 num_axes: 2", (2, 9, 4)),
    ("shape { dim: 1 } axis: -1 num_axes: 0", (2, 3, 3, 4, 1)),
    ("shape { dim: 1 } axis: 0 num_axes: 0", (1, 2, 3, 3, 4)),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 }", (2, 3, 3, 4)),
    ("shape { dim: 2 dim: 0 dim: -1 } axis: 1", (2, 2, 3, 6)),
])
def test_reshape(device, param, shape):
    layer = make_layer(f'type: "Reshape" reshape_param {{ {param} }}', device=device)
    bottom = [rand((2, 3, 3, 4), device)]
    top = run(layer, bottom)
    assert top[0].shape == shape
    np.testing.assert_array_equal(np_of(top[0]), np_of(bottom[0]).reshape(shape))


@pytest.mark.parametrize("text", ['type: "Flatten" flatten_param { axis: 1 end_axis: 2 }',
                                  'type: "Reshape" reshape_param { shape { dim: -1 dim: 3 } }'])
def test_flatten_reshape_gradient(device, text):
    check_gradient(make_layer(text, device=device), [rand((2, 3, 2), device)])


@pytest.mark.parametrize("param,message", [
    ("shape { dim: -1 dim: -1 }", "more than one -1"),
    ("shape { dim: 5 dim: -1 }", "cannot infer"),
    ("shape { dim: 5 dim: 5 }", r"cannot reshape bottom \(2, 3, 4\) \(24 elements\)"),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 }", "no axis 3 to copy"),
    ("shape { dim: 2 } axis: 2 num_axes: 2", "does not fit"),
])
def test_reshape_bad_shape(param, message):
    layer = make_layer(f'name: "rs" type: "Reshape" reshape_param {{ {param} }}')
    with pytest.raises(LayerSetupError, match=f"'rs'.*{message}"):
        setup(layer, [Blob((2, 3, 4))])


# -- Silence, Split, Tile ------------------------------------------------------------
def test_silence_zeroes_diffs(device):
    layer = make_layer('type: "Silence"', device=device)
    bottom = [rand((2, 3), device), rand((4,), device, seed=1)]
    for b in bottom:
        b.diff.fill_(7)
    run(layer, bottom, num_tops=0)
    layer.backward([], [True, False], bottom)
    assert bottom[0].diff.abs().sum() == 0 and (bottom[1].diff == 7).all()


def test_split_gradient(device):
    check_gradient(make_layer('type: "Split"', device=device), [rand((2, 3), device)], num_tops=3)


@pytest.mark.parametrize("axis,tiles,shape", [(1, 3, (2, 9, 2)), (0, 2, (4, 3, 2)),
                                              (-1, 2, (2, 3, 4))])
def test_tile(device, axis, tiles, shape):
    layer = make_layer(f'type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }}',
                       device=device)
    bottom = [rand((2, 3, 2), device)]
    top = run(layer, bottom)
    a = axis % 3
    reps = [1] * a + [tiles]
    x = np_of(bottom[0]).reshape(bottom[0].shape[:a] + (1, -1))
    expected = np.tile(x, reps + [1])
    np.testing.assert_array_equal(np_of(top[0]), expected.reshape(shape))
    check_gradient(layer, bottom)


def test_tile_needs_tiles():
    with pytest.raises(LayerSetupError, match="tiles"):
        setup(make_layer('type: "Tile"'), [Blob((2, 3))])


# -- Crop ------------------------------------------------------------------------
@pytest.mark.parametrize("param,window", [
    ("crop_param { axis: 2 offset: 1 offset: 2 }", np.s_[:, :, 1:3, 2:4]),
    ("crop_param { axis: 1 offset: 1 }", np.s_[:, 1:3, 1:3, 1:3]),
    ("crop_param { axis: -2 }", np.s_[:, :, 0:2, 0:2]),
    ("", np.s_[:, :, 0:2, 0:2]),
])
def test_crop(device, param, window):
    layer = make_layer(f'type: "Crop" {param}', device=device)
    bottom = [rand((1, 3, 4, 5), device), rand((1, 2, 2, 2), device, seed=1)]
    top = run(layer, bottom)
    np.testing.assert_array_equal(np_of(top[0]), np_of(bottom[0])[window])
    check_gradient(layer, bottom)


@pytest.mark.parametrize("param", ["crop_param { axis: 2 offset: 3 }",
                                   "crop_param { axis: 2 offset: 0 offset: 4 }"])
def test_crop_offset_too_large(param):
    layer = make_layer(f'name: "crop" type: "Crop" {param}')
    with pytest.raises(LayerSetupError, match="'crop'.*does not fit"):
        setup(layer, [Blob((2, 3, 4, 5)), Blob((2, 3, 2, 2))])


def test_crop_offset_count():
    layer = make_layer('type: "Crop" crop_param { axis: 1 offset: 0 offset: 0 }')
    with pytest.raises(LayerSetupError, match="2 offsets"):
        setup(layer, [Blob((2, 3, 4, 5)), Blob((2, 3, 2, 2))])


# -- Filter, BatchReindex, Parameter ---------------------------------------------
def test_parameter(device):
    layer = make_layer('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }',
                       device=device)
    top = run(layer, [])
    assert top[0].shape == (2, 3) and layer.blobs[0].shape == (2, 3)
    layer.blobs[0].data.copy_(torch.arange(6.0).view(2, 3))
    layer.forward([], top)
    assert torch.equal(top[0].data, layer.blobs[0].data)
    check_gradient(layer, [])
    layer.blobs[0].diff.fill_(1)
    top[0].diff.fill_(2)
    layer.backward(top, [], [])
    assert (layer.blobs[0].diff == 3).all()   # accumulated


# -- ArgMax --------------------------------------------------------------------------
NET = """
force_backward: true
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 3 dim: 4 }} }} }}
layer {{ name: "y" type: "Input" top: "y" input_param {{ shape {{ dim: 2 dim: 3 dim: 4 }} }} }}
layer {{ name: "p" type: "Power" bottom: "x" top: "p" power_param {{ scale: 2 }} }}
layer {{ name: "e" type: "Eltwise" bottom: "p" bottom: "y" top: "{e}" eltwise_param {{ {op} }} }}
layer {{ name: "loss" type: "Reduction" bottom: "{e}" top: "loss" loss_weight: 1
         reduction_param {{ operation: SUMSQ }} }}
"""


def run_net(text, device):
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TRAIN,
                    dtype=torch.float64, device=device)
    g = torch.Generator().manual_seed(3)
    for name in ("x", "y"):
        net.blobs[name].data[...] = torch.rand(2, 3, 4, generator=g, dtype=torch.float64).numpy()
    net.forward()
    net.backward()
    return {n: (net.blobs[n].data.copy(), net.blobs[n].diff.copy()) for n in ("x", "y", "loss")}


@pytest.mark.parametrize("layer", ['type: "Flatten"', 'type: "Concat"',
                                   'type: "Reshape" reshape_param { shape { dim: -1 } }'])
def test_in_place_refused_in_a_net(layer):
    text = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }'
            f'layer {{ name: "bad" bottom: "x" top: "x" {layer} }}')
    with pytest.raises(LayerSetupError, match="'bad'.*in-place"):
        caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TEST)


def test_silence_gradient(device):
    # Silence consumes its bottoms: the objective does not depend on them.
    layer = make_layer('type: "Silence"', device=device)
    check_gradient(layer, [random_blob((2, 3), device=device), random_blob((4,), device=device)],
                   num_tops=0)
