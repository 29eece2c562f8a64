"""The Net's faster ways of running a net must leave every blob as the plain layer-by-layer run:
BatchNorm + in-place Scale as one kernel, hidden inputs for in-place BatchNorm, storage shared
by Split / Flatten tops, 1x1 convolutions as matrix products, recycled diffs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import caffe
from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from caffe.testing import check_gradient, make_layer, random_blob

FILL = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def net_text(bn_in_place=True, global_stats=False, bias=True, kernel=1):
    bn_top = "c" if bn_in_place else "n"
    stats = "use_global_stats: true" if global_stats else ""
    return f"""
      force_backward: true
      layer {{ name: "in" type: "Input" top: "x" top: "t"
               input_param {{ shape {{ dim: 3 dim: 2 dim: 4 dim: 5 }} shape {{ dim: 3 }} }} }}
      layer {{ name: "conv" type: "Convolution" bottom: "x" top: "c"
               convolution_param {{ num_output: 4 kernel_size: {kernel} pad: {kernel // 2}
                                   {FILL} }} }}
      layer {{ name: "bn" type: "BatchNorm" bottom: "c" top: "{bn_top}"
               batch_norm_param {{ {stats} }} }}
      layer {{ name: "sc" type: "Scale" bottom: "{bn_top}" top: "{bn_top}"
               scale_param {{ bias_term: {str(bias).lower()}
                              filler {{ type: "uniform" min: 0.5 max: 1.5 }}
                              bias_filler {{ type: "gaussian" std: 0.5 }} }} }}
      layer {{ name: "relu" type: "ReLU" bottom: "{bn_top}" top: "{bn_top}" }}
      layer {{ name: "flat" type: "Flatten" bottom: "{bn_top}" top: "f" }}
      layer {{ name: "ip" type: "InnerProduct" bottom: "f" top: "y"
               inner_product_param {{ num_output: 3 {FILL} }} }}
      layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "t" top: "loss" }}"""


def build(text):
    torch.manual_seed(0)
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TRAIN,
                    dtype=torch.float64)
    for layer in net._layers:
        if layer.type == "BatchNorm":   # some running statistics for use_global_stats
            layer.blobs[0].data[...] = torch.tensor([0.1, -0.2, 0.3, 0.0])
            layer.blobs[1].data[...] = torch.tensor([1.5, 0.5, 2.0, 1.0])
            layer.blobs[2].data.fill_(1)
    rng = np.random.default_rng(1)
    net.blobs["x"].data[...] = rng.standard_normal(net.blobs["x"].shape)
    net.blobs["t"].data[...] = [0, 2, 1]
    return net


def state(net):
    out = {name: (blob.data.copy(), blob.diff.copy()) for name, blob in net.blobs.items()}
    for name, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            out[f"{name}/{i}"] = (blob.data.copy(), blob.diff.copy())
    return out


def run_whole(net):
    net.clear_param_diffs()
    net.forward_backward()
    return state(net)


def run_layer_by_layer(net):
    net.clear_param_diffs()
    for i in range(len(net._layers)):
        net.forward_from_to(i, i)
    for i in reversed(range(len(net._layers))):
        net.backward_from_to(i, i)
    return state(net)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        for x, y in zip(a[key], b[key]):
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("bn_in_place", [True, False])
@pytest.mark.parametrize("global_stats", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_batch_norm_scale_and_hidden_input_match_layer_by_layer(bn_in_place, global_stats,
                                                                      bias):
    text = net_text(bn_in_place, global_stats, bias)
    whole, plain = build(text), build(text)
    assert whole.plan.fusion[whole._layer_names.index("bn")]
    assert (whole.plan.hidden[whole._layer_names.index("bn")] is not None) == \
        (bn_in_place and not global_stats)
    assert_same(run_whole(whole), run_layer_by_layer(plain))
    # Twice: running statistics and reused buffers carry over correctly.
    assert_same(run_whole(whole), run_layer_by_layer(plain))


def test_fused_scale_backward_alone_after_fused_forward():
    whole, plain = build(net_text()), build(net_text())
    whole.forward()
    plain.forward()
    for net in (whole, plain):
        net.clear_param_diffs()
        net.backward_from_to(len(net._layers) - 1, net._layer_names.index("sc"))
    assert_same(state(whole), state(plain))


def test_split_and_flatten_tops_share_storage():
    net = build(net_text(kernel=3))
    net.forward_backward()   # the first backward allocates the bottom's diff; then it is shared
    net.forward_backward()
    flat, bottom = net._blobs[net.blob_index["f"]], net._blobs[net.blob_index["c"]]
    assert flat.shares_data_with(bottom) and flat.shares_diff_with(bottom)
    split = caffe.Net(parse_text("""
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
      layer { name: "a" type: "AbsVal" bottom: "x" top: "a" }
      layer { name: "b" type: "AbsVal" bottom: "x" top: "b" }""", caffe_pb2.NetParameter()),
        caffe.TEST)
    split.forward()
    x = split._blobs[split.blob_index["x"]]
    tops = [b for name, b in zip(split._blob_names, split._blobs) if "split" in name]
    assert len(tops) == 2 and all(t.shares_data_with(x) for t in tops)


@pytest.mark.parametrize("num", [2, 40])   # 40: the batched weight-gradient path
def test_pointwise_convolution_matches_torch(num):
    layer = make_layer(f'type: "Convolution" convolution_param {{ num_output: 3 kernel_size: 1 '
                       f'{FILL} }}')
    x = random_blob((num, 4, 3, 2))
    top = [caffe.blob.Blob(dtype=torch.float64)]
    layer.layer_setup([x], top)
    assert layer.pointwise
    layer.forward([x], top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    torch.testing.assert_close(top[0].data, F.conv2d(x.data, w, b))
    top[0].diff[...] = torch.randn(top[0].shape, dtype=torch.float64)
    layer.backward(top, [True], [x])
    xr, wr, br = (t.clone().requires_grad_() for t in (x.data, w, b))
    F.conv2d(xr, wr, br).backward(top[0].diff)
    for ours, theirs in ((x.diff, xr.grad), (layer.blobs[0].diff, wr.grad),
                         (layer.blobs[1].diff, br.grad)):
        torch.testing.assert_close(ours, theirs)


def test_pointwise_convolution_gradient():
    layer = make_layer(f'type: "Convolution" convolution_param {{ num_output: 2 kernel_size: 1 '
                       f'{FILL} }}')
    check_gradient(layer, [random_blob((2, 3, 2, 3))])


@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_lrn_gradient_both_power_paths(beta):
    layer = make_layer(f'type: "LRN" lrn_param {{ local_size: 3 alpha: 0.5 beta: {beta} k: 2 }}')
    check_gradient(layer, [random_blob((2, 5, 2, 3))])


def test_recycled_diffs_train_the_same_and_keep_input_gradients():
    text = net_text(kernel=3)
    plain, recycled = build(text), build(text)
    recycled.recycle_diffs = True
    for _ in range(2):
        a, b = run_whole(plain), run_whole(recycled)
    for key in a:
        if "/" in key:                  # learned blobs: data and diff
            for x, y in zip(a[key], b[key]):
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a["x"][1], b["x"][1], rtol=1e-12)   # the input's gradient
    np.testing.assert_allclose(a["loss"][1], b["loss"][1])          # the loss weight
    storages = {blob._diff.buf.data_ptr() for blob in recycled._blobs if blob.diff_allocated()}
    assert len(storages) < sum(blob.diff_allocated() for blob in recycled._blobs)


RESIDUAL = f"""
  layer {{ name: "in" type: "Input" top: "x" top: "t"
           input_param {{ shape {{ dim: 3 dim: 2 dim: 4 dim: 5 }} shape {{ dim: 3 }} }} }}
  layer {{ name: "a" type: "Convolution" bottom: "x" top: "a"
           convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 {FILL} }} }}
  layer {{ name: "relu" type: "ReLU" bottom: "a" top: "a" }}
  layer {{ name: "b" type: "Convolution" bottom: "a" top: "b"
           convolution_param {{ num_output: 4 kernel_size: 1 {FILL} }} }}
  layer {{ name: "bn" type: "BatchNorm" bottom: "b" top: "b" }}
  layer {{ name: "sum" type: "Eltwise" bottom: "b" bottom: "a" top: "s" }}
  layer {{ name: "ip" type: "InnerProduct" bottom: "s" top: "y"
           inner_product_param {{ num_output: 3 {FILL} }} }}
  layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "t" top: "loss" }}"""


def test_recycled_diffs_share_split_and_sum_buffers_and_train_the_same():
    plain, recycled = build(RESIDUAL), build(RESIDUAL)
    recycled.recycle_diffs = True
    for _ in range(3):
        a, b = run_whole(plain), run_whole(recycled)
    for key in a:
        if "/" in key:
            for x, y in zip(a[key], b[key]):
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14, err_msg=key)
    blob = {name: recycled._blobs[recycled.blob_index[name]] for name in ("s", "b")}
    assert blob["b"].shares_diff_with(blob["s"])          # the sum passes its diff through
    split = [recycled._blobs[i] for i, name in enumerate(recycled._blob_names) if "split" in name]
    assert split and split[0].shares_diff_with(recycled._blobs[recycled.blob_index["a"]])


def test_in_place_batch_norm_on_a_net_input_reads_the_input():
    net = caffe.Net(parse_text("""
      force_backward: true
      layer { name: "in" type: "Input" top: "x" top: "t"
              input_param { shape { dim: 4 dim: 3 } } }
      layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }
      layer { name: "loss" type: "EuclideanLoss" bottom: "x" bottom: "t" top: "loss" }""",
                               caffe_pb2.NetParameter()), caffe.TRAIN, dtype=torch.float64)
    assert net.plan.hidden[net._layer_names.index("bn")] is None   # nothing computes an input
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3))
    net.blobs["x"].data[...] = x
    net.blobs["t"].data[...] = 0
    net.forward()
    np.testing.assert_allclose(net.blobs["x"].data, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5),
                               rtol=1e-9)


@pytest.mark.parametrize("global_stats", [False, True])
def test_plain_plan_runs_layer_by_layer_and_matches_the_optimised_one(global_stats):
    text = net_text(True, global_stats)
    whole, plain = build(text), build(text)
    plain.optimize = False
    assert not any(plain.plan.fusion) and not any(h is not None for h in plain.plan.hidden)
    assert all(len(step.layers) == 1 for step in plain.plan.forward_steps(0, 7))
    assert_same(run_whole(whole), run_whole(plain))
    order = []
    plain.before_forward(lambda i: order.append(("f", i)))
    plain.before_backward(lambda i: order.append(("b", i)))
    plain.forward_backward()
    n = len(plain.layers)
    assert order == [("f", i) for i in range(n)] + [("b", i) for i in reversed(range(n))]


def test_a_dropped_net_is_freed_at_once():
    # No reference cycle through the plan: a Net's data layers stop their prefetch threads
    # when the Net goes, not when the cyclic garbage collector next runs.
    import gc
    import weakref
    net = build(net_text())
    net.forward_backward()
    gc.disable()
    try:
        ref = weakref.ref(net)
        del net
        assert ref() is None
    finally:
        gc.enable()


def test_backward_runs_where_the_net_needs_it_not_where_a_layer_keeps_inputs():
    # `caffe time` sets every layer's need_backward (keep what backward reads) on a deploy net
    # and times each layer's backward itself; Net.backward_all must still skip these layers.
    net = caffe.Net(parse_text("""
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
      layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
              inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }""",
                               caffe_pb2.NetParameter()), caffe.TEST)
    for layer in net._layers:
        layer.need_backward = True
    net.forward()
    net.blobs["y"].diff[...] = 1
    net.backward_all()
    assert not net.params["ip"][0].diff.any()


def test_batch_norm_running_statistics_never_read_fresh_memory(monkeypatch):
    """The batch-norm kernel's running update (momentum 1) multiplies the old value by 0, and 0 *
    NaN is NaN: with fresh memory full of NaN (as torch.empty may hand out) the statistics must
    still come out finite, fused or not."""
    empty = torch.empty

    def nan_empty(*args, **kwargs):
        t = empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t
    monkeypatch.setattr(torch, "empty", nan_empty)
    for net in (build(net_text(False, False, True)), build(net_text(True, False, False))):
        for run in (run_whole, run_layer_by_layer):
            s = run(net)
            assert np.isfinite(s["bn/0"][0]).all() and np.isfinite(s["bn/1"][0]).all(), s["bn/1"]
