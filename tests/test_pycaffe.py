"""What pycaffe's own suite (python/caffe/test) checks: nets from files, forward/backward
through net.blobs, save/load, levels and stages, solvers stepped from Python, layer types."""
import numpy as np
import pytest
import torch

import caffe

NUM_OUTPUT = 13


def simple_net_text(num_output=NUM_OUTPUT):
    return f"""name: 'testnet' force_backward: true
    layer {{ type: 'DummyData' name: 'data' top: 'data' top: 'label'
      dummy_data_param {{ num: 5 channels: 2 height: 3 width: 4
        num: 5 channels: 1 height: 1 width: 1
        data_filler {{ type: 'gaussian' std: 1 }}
        data_filler {{ type: 'constant' }} }} }}
    layer {{ type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
      convolution_param {{ num_output: 11 kernel_size: 2 pad: 3
        weight_filler {{ type: 'gaussian' std: 1 }}
        bias_filler {{ type: 'constant' value: 2 }} }}
        param {{ decay_mult: 1 }} param {{ decay_mult: 0 }} }}
    layer {{ type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip_blob'
      inner_product_param {{ num_output: {num_output}
        weight_filler {{ type: 'gaussian' std: 2.5 }}
        bias_filler {{ type: 'constant' value: -3 }} }} }}
    layer {{ type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip_blob' bottom: 'label'
      top: 'loss' }}"""


def need_types(*types):
    missing = sorted(set(types) - set(caffe.layer_type_list()))
    if missing:
        pytest.fail(f"layer types not registered: {', '.join(missing)}")


@pytest.fixture
def net_file(tmp_path):
    need_types("DummyData", "Convolution", "InnerProduct", "SoftmaxWithLoss")
    path = tmp_path / "simple.prototxt"
    path.write_text(simple_net_text())
    return str(path)


@pytest.fixture
def net(net_file):
    net = caffe.Net(net_file, caffe.TRAIN, dtype=torch.float64)
    rng = np.random.default_rng(0)
    net.blobs["label"].data[...] = rng.integers(NUM_OUTPUT, size=net.blobs["label"].data.shape)
    return net


def test_blobs_outlive_the_net(net):
    params = sum(map(list, net.params.values()), [])
    blobs = list(net.blobs.values())
    del net
    total = sum(p.data.sum() + p.diff.sum() for p in params)
    total += sum(b.data.sum() + b.diff.sum() for b in blobs)
    assert np.isfinite(total)


def test_forward_backward_through_blobs(net):
    out = net.forward()
    loss = float(out["loss"])        # out holds views of the blobs, as pycaffe's does
    assert list(out) == ["loss"] and loss > 0
    diffs = net.backward()
    assert diffs == {}              # no Input blobs: nothing to return
    assert np.abs(net.blobs["data"].diff).sum() > 0            # force_backward
    assert np.abs(net.params["conv"][0].diff).sum() > 0
    # The loss is a function of the blob values set from Python.
    net.blobs["label"].data[...] = (net.blobs["label"].data + 1) % NUM_OUTPUT
    assert float(net.forward(start="loss")["loss"]) != loss


def test_forward_start_end_and_clear_param_diffs(net):
    net.forward()
    conv, ip = net.blobs["conv"].data.copy(), net.blobs["ip_blob"].data.copy()
    net.blobs["conv"].data[...] = 0
    net.blobs["ip_blob"].data[...] = 0
    # Only the conv layer runs: DummyData would draw new Gaussian data.
    out = net.forward(start="conv", end="conv")
    assert list(out) == ["conv"]
    np.testing.assert_allclose(out["conv"], conv)
    assert not np.any(net.blobs["ip_blob"].data)
    net.forward(start="ip", end="ip")
    np.testing.assert_allclose(net.blobs["ip_blob"].data, ip)
    net.backward()
    net.clear_param_diffs()
    assert all(not np.any(p.diff) for ps in net.params.values() for p in ps)


def test_inputs_outputs_and_names(net):
    assert net.inputs == [] and net.outputs == ["loss"]
    assert net.top_names["ip"] == ["ip_blob"]
    assert net.bottom_names["loss"] == ["ip_blob", "label"]
    assert list(net.layer_dict) == ["data", "conv", "ip", "loss"]
    assert net.layer_dict["conv"].type == "Convolution"
    assert [b.data.shape for b in net.layer_dict["conv"].blobs] == [(11, 2, 2, 2), (11,)]


@pytest.mark.parametrize("ext", [".caffemodel", ".caffemodel.h5"])
def test_save_and_copy_from_round_trip(net, net_file, tmp_path, ext):
    path = str(tmp_path / ("weights" + ext))
    net.save(path)
    net2 = caffe.Net(net_file, path, caffe.TRAIN, dtype=torch.float64)
    for name in net.params:
        for a, b in zip(net.params[name], net2.params[name]):
            np.testing.assert_allclose(a.data, b.data, rtol=1e-7 if ext.endswith("h5") else 0)
    net3 = caffe.Net(net_file, caffe.TRAIN, dtype=torch.float64)
    net3.copy_from(path)
    np.testing.assert_allclose(net3.params["ip"][1].data, net.params["ip"][1].data, rtol=1e-7)


LEVELS_STAGES = """name: 'rules'
layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 2 } } }
layer { name: 'always' type: 'AbsVal' bottom: 'data' top: 'always' }
layer { name: 'level_ge_1' type: 'AbsVal' bottom: 'data' top: 'a' include { min_level: 1 } }
layer { name: 'stage_b' type: 'AbsVal' bottom: 'data' top: 'b' include { stage: 'B' } }
layer { name: 'not_stage_b' type: 'AbsVal' bottom: 'data' top: 'c' exclude { stage: 'B' } }
layer { name: 'train_only' type: 'AbsVal' bottom: 'data' top: 'd' include { phase: TRAIN } }
"""


@pytest.mark.parametrize("kwargs, expected", [
    (dict(), ["data", "always", "not_stage_b"]),
    (dict(level=1), ["data", "always", "level_ge_1", "not_stage_b"]),
    (dict(stages=["B"]), ["data", "always", "stage_b"]),
])
def test_levels_and_stages(tmp_path, kwargs, expected):
    need_types("Input", "AbsVal")
    path = tmp_path / "rules.prototxt"
    path.write_text(LEVELS_STAGES)
    net = caffe.Net(str(path), phase=caffe.TEST, **kwargs)
    assert [n for n in net.layer_dict if not n.endswith("_split")] == expected
    assert "train_only" in caffe.Net(str(path), caffe.TRAIN).layer_dict


def test_layer_type_list():
    types = caffe.layer_type_list()
    assert types == sorted(types)
    assert {"Input", "Split", "Python"} <= set(types)


SOLVER = """net: '{net}'
test_iter: 2 test_interval: 10 base_lr: 0.01 momentum: 0.9
weight_decay: 0.0005 lr_policy: 'inv' gamma: 0.0001 power: 0.75
display: 100 max_iter: 10 snapshot_after_train: false"""


def test_solver_steps_from_python(net_file, tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text(SOLVER.format(net=net_file))
    solver = caffe.get_solver(str(path))
    assert type(solver).__name__ == "SGDSolver"
    nets = [solver.net] + list(solver.test_nets)
    assert len(nets) == 2
    rng = np.random.default_rng(0)
    for n in nets:
        n.blobs["label"].data[...] = rng.integers(NUM_OUTPUT, size=n.blobs["label"].data.shape)
    before = solver.net.params["ip"][0].data.copy()
    assert solver.iter == 0
    solver.step(3)
    assert solver.iter == 3
    assert not np.allclose(solver.net.params["ip"][0].data, before)
    solver.solve()
    assert solver.iter == 10
    # The nets outlive their solver.
    del solver
    total = sum(p.data.sum() + p.diff.sum() for n in nets for ps in n.params.values()
                for p in ps)
    assert np.isfinite(total)
