"""caffe.coord_map: coordinate maps through conv/pool/deconv/crop and the crop() helper."""
import numpy as np
import pytest
import torch

import caffe
from caffe.coord_map import (AxisMismatchException, CropError, UnconnectedTopsError,
                             compose, coord_map_from_to, crop, inverse)
from caffe.errors import CaffeError
from caffe.net_spec import NetSpec
from caffe.net_spec import layers as L
from caffe.net_spec import params as P


def coord_net_spec(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    """data -> conv -> pool -> deconv (upsampling kernel twice the stride)."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.aux = L.Input(shape=dict(dim=[2, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    deconv_ks = [s * 2 for s in dstride] if isinstance(dstride, list) else dstride * 2
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=deconv_ks, stride=dstride,
                               pad=dpad)
    return n


def _pair(n):
    return n.deconv, n.data


def test_conv_pool_deconv():
    assert coord_map_from_to(*_pair(coord_net_spec())) == (1, 1, 0)   # 2x pool, 2x deconv
    assert coord_map_from_to(*_pair(coord_net_spec(pool=4, dstride=4))) == (1, 1, -1)


def test_pass_through_layers():
    n = coord_net_spec()
    expected = coord_map_from_to(n.deconv, n.data)
    n.relu = L.ReLU(n.deconv)
    n.conv1x1 = L.Convolution(n.relu, num_output=10, kernel_size=1, stride=1, pad=0)
    for top in (n.relu, n.conv1x1):
        assert coord_map_from_to(top, n.data) == expected


@pytest.mark.parametrize("pad", [1, 7])
def test_padding(pad):
    ax, a, b = coord_map_from_to(*_pair(coord_net_spec()))
    _, a_pad, b_pad = coord_map_from_to(*_pair(coord_net_spec(pad=pad)))
    assert (a_pad, b_pad) == (a, b - pad)          # conv padding adds offset
    _, a_pad, b_pad = coord_map_from_to(*_pair(coord_net_spec(dpad=pad)))
    assert (a_pad, b_pad) == (a, b + pad)          # deconv padding removes it
    _, a_pad, b_pad = coord_map_from_to(*_pair(coord_net_spec(pad=pad, dpad=pad)))
    assert (a_pad, b_pad) == (a, b)


def test_multiple_bottoms_map_alike():
    n = coord_net_spec()
    n.conv_data, n.conv_aux = L.Convolution(n.data, n.aux, ntop=2, num_output=10,
                                            kernel_size=5, stride=2, pad=0)
    assert coord_map_from_to(n.conv_data, n.data) == coord_map_from_to(n.conv_aux, n.aux)


def test_anisotropic_map_is_its_isotropic_parts():
    m3 = coord_map_from_to(*_pair(coord_net_spec(ks=3, stride=1, pad=0)))
    m5 = coord_map_from_to(*_pair(coord_net_spec(ks=5, stride=2, pad=10)))
    ax, a, b = coord_map_from_to(*_pair(coord_net_spec(ks=[3, 5], stride=[1, 2],
                                                        pad=[0, 10])))
    assert ax == m3[0] == m5[0]
    assert (a[0], b[0]) == (m3[1], m3[2]) and (a[1], b[1]) == (m5[1], m5[2])


def test_nd_convolution():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 100, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=[3, 3, 3], stride=[1, 1, 1],
                           pad=[0, 1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2, pad=0)
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=4, stride=2, pad=0)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and len(a) == len(b) == 3 and np.all(a == 1)
    assert b[0] - 1 == b[1] and b[1] - 1 == b[2]


@pytest.mark.parametrize("offset", [0, 3])
def test_crop_of_crop(offset):
    n = coord_net_spec()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=offset)
    assert coord_map_from_to(n.crop, n.data) == (ax, a, b + offset)


@pytest.mark.parametrize("pool, offset", [(2, 0), (4, 1)])
def test_crop_helper_offsets(pool, offset):
    n = coord_net_spec(pool=pool, dstride=pool)
    n.crop = crop(n.deconv, n.data)
    layer = n.to_proto().layer[-1]
    assert layer.type == "Crop" and list(layer.bottom) == ["deconv", "data"]
    assert layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [offset]


def test_crop_helper_builds_a_net_whose_crop_fits_the_input(tmp_path):
    missing = {"Input", "Convolution", "Pooling", "Deconvolution", "Crop"} - \
        set(caffe.layer_type_list())
    if missing:
        pytest.fail(f"layer types not registered: {sorted(missing)}")
    n = coord_net_spec(pool=4, dstride=4)
    n.crop = crop(n.deconv, n.data)
    path = tmp_path / "fcn.prototxt"
    path.write_text(str(n.to_proto()))
    net = caffe.Net(str(path), caffe.TEST, dtype=torch.float64)
    assert net.blobs["deconv"].data.shape[2:] == (104, 104)
    net.forward()
    assert net.blobs["crop"].data.shape[2:] == net.blobs["data"].data.shape[2:]
    np.testing.assert_array_equal(net.blobs["crop"].data,
                                  net.blobs["deconv"].data[:, :, 1:101, 1:101])


def test_unconnected_tops():
    n = coord_net_spec()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError, match="Could not compute map between tops") as err:
        coord_map_from_to(n.ip, n.data)
    assert isinstance(err.value, UnconnectedTopsError)


def test_scale_mismatch():
    n = coord_net_spec(pool=3, dstride=2)
    with pytest.raises(AssertionError, match="scale mismatch") as err:
        crop(n.deconv, n.data)
    assert isinstance(err.value, CropError)


def test_negative_crop():
    n = coord_net_spec(dpad=10)          # output smaller than the input
    with pytest.raises(AssertionError, match="cannot crop negative offset"):
        crop(n.deconv, n.data)


def test_compose_and_inverse():
    m = (1, np.array([2.0]), np.array([3.0]))
    ax, a, b = compose(m, inverse(m))
    assert ax == 1 and a == 1 and b == 0
    with pytest.raises(AxisMismatchException):
        compose((1, 1, 0), (2, 1, 0))


@pytest.mark.parametrize("nested", [False, True])
def test_legacy_h_w_params_stop_the_walk(nested):
    # As pycaffe's assertion: a map is not read from kernel_h/pad_h/..., and the walk stops
    # there with the reason rather than reporting unconnected tops.
    data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    params = dict(kernel_size=3, pad_h=1, pad_w=1, num_output=1)
    conv = L.Convolution(data, convolution_param=params) if nested else \
        L.Convolution(data, **params)
    with pytest.raises(AssertionError, match="legacy _h/_w parameters .*pad_h, pad_w"):
        coord_map_from_to(conv, data)
    with pytest.raises(CaffeError):
        crop(conv, data)
