"""BVLC's own client code against this caffe: its example shell flows, solver files and
python/train.py, and the net-building behaviours they rely on (issue 13)."""
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe
from caffe.errors import CaffeError, NetError
from caffe.proto import caffe_pb2
from caffe.solvers import read_solver
from caffe.tools import convert_mnist_data
from tests.conftest import shared_path
from tests.test_bvlc_suite import extract_bvlc

ROOT = Path(__file__).resolve().parents[1]


def shrink(path, **fields):
    """Rewrite `field: value` lines of a BVLC prototxt (iteration counts, batch sizes)."""
    text = path.read_text()
    for field, value in fields.items():
        text, n = re.subn(rf"(?m)^(\s*{field}:) \S+", rf"\g<1> {value}", text)
        assert n, field
    path.write_text(text)


@pytest.fixture(scope="module")
def caffe_root(tmp_path_factory):
    """BVLC's examples/ and models/ with small MNIST LMDBs where examples/mnist expects
    them, and ./build/tools/caffe running this project's `caffe`."""
    base = tmp_path_factory.mktemp("bvlc")
    root = extract_bvlc(base, ("examples/mnist/", "examples/finetune_pascal_detection/",
                               "python/train.py"))
    images, labels = convert_mnist_data.read_idx(
        shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz"),
        shared_path("data", "mnist", "t10k-labels-idx1-ubyte.gz"))
    mnist = root / "examples" / "mnist"
    convert_mnist_data.write_mnist_db(images[:256], labels[:256], mnist / "mnist_train_lmdb")
    convert_mnist_data.write_mnist_db(images[256:456], labels[256:456],
                                      mnist / "mnist_test_lmdb")
    tools = root / "build" / "tools"
    tools.mkdir(parents=True)
    shim = tools / "caffe"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m caffe.tools.caffe \"$@\"\n")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return root


def run_sh(root, script):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(["sh", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)


# -- Build 1: a second run in the same folder replaces the first run's snapshots -------------
@pytest.mark.slow
def test_train_lenet_then_train_lenet_adam_in_one_folder(caffe_root):
    mnist = caffe_root / "examples" / "mnist"
    for solver in ("lenet_solver.prototxt", "lenet_solver_adam.prototxt"):
        shrink(mnist / solver, max_iter=6, snapshot=3, test_interval=6, test_iter=2,
               display=3)
    shrink(mnist / "lenet_train_test.prototxt", batch_size=16)
    first = run_sh(caffe_root, "examples/mnist/train_lenet.sh")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Replacing" not in first.stderr
    names = [f"lenet_iter_{i}.{ext}" for i in (3, 6) for ext in ("caffemodel", "solverstate")]
    sgd_state = caffe_pb2.SolverState.FromString((mnist / names[-1]).read_bytes())
    second = run_sh(caffe_root, "examples/mnist/train_lenet_adam.sh")
    assert second.returncode == 0, second.stderr[-3000:]
    warnings = [line for line in second.stderr.splitlines()
                if line.startswith("W") and "Replacing" in line]
    assert sorted(w.split("Replacing ", 1)[1].split(",")[0] for w in warnings) == \
        sorted(f"examples/mnist/{n}" for n in names)
    # The files now hold the Adam run: two history sets per learned blob.
    adam_state = caffe_pb2.SolverState.FromString((mnist / names[-1]).read_bytes())
    assert len(adam_state.history) == 2 * len(sgd_state.history) == 16
    assert not list(mnist.glob("*.tmp"))


# -- Build 6: the consolidated solver's inline V1 nets ------------------------------------
def test_lenet_consolidated_solver_inline_v1_nets(caffe_root, monkeypatch):
    monkeypatch.chdir(caffe_root)
    param = read_solver("examples/mnist/lenet_consolidated_solver.prototxt")
    assert len(param.net_param.layers) == 12 and not len(param.net_param.layer)   # V1 form
    param.solver_mode = param.CPU
    solver = caffe.SGDSolver(param)
    types = [l.type for l in solver.net.layers if l.type != "Split"]
    assert types == ["Data", "Convolution", "Pooling", "Convolution", "Pooling",
                     "InnerProduct", "ReLU", "InnerProduct", "Accuracy", "SoftmaxWithLoss"]
    assert len(solver.test_nets) == 2
    sources = [n.layers[0]._layer.param.data_param.source for n in solver.test_nets]
    assert sources == ["examples/mnist/mnist_test_lmdb", "examples/mnist/mnist_train_lmdb"]
    solver.step(1)
    assert solver.iter == 1


# -- Build 2: loss layers get their anonymous top ------------------------------------------
TOPLESS = """name: "topless"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" }
"""


def test_loss_layer_without_top_gets_an_automatic_one(tmp_path):
    path = tmp_path / "topless.prototxt"
    path.write_text(TOPLESS)
    net = caffe.Net(str(path), caffe.TRAIN)
    assert net._blob_names[-1] == "(automatic)" and net.top_names["loss"] == ["(automatic)"]
    assert net.outputs == []                  # as BVLC: an anonymous top is no net output
    net.blobs["data"].data[...] = np.random.default_rng(0).random((4, 5))
    net.blobs["label"].data[...] = [0, 1, 2, 1]
    net.forward()
    loss = float(net._blobs[-1].data)
    assert loss > 0 and net._blob_loss_weights[-1] == 1.0
    net.backward()
    assert np.abs(net.params["ip"][0].diff).sum() > 0   # the loss drives the gradients
    # A second such layer gets its own anonymous blob.
    two = tmp_path / "two.prototxt"
    two.write_text(TOPLESS + TOPLESS.splitlines()[-1].replace('"loss"', '"loss2"', 1) + "\n")
    net2 = caffe.Net(str(two), caffe.TRAIN)
    assert net2._blob_names.count("(automatic)") == 2


def test_pascal_finetune_net_with_its_top_less_loss_layer(caffe_root):
    # BVLC's own prototxt with a top-less loss layer; its WindowData layers need R-CNN's
    # window files, so an Input layer of the same tops stands in for them.
    from google.protobuf import text_format
    path = caffe_root / "examples" / "finetune_pascal_detection" / \
        "pascal_finetune_trainval_test.prototxt"
    param = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    loss = [l for l in param.layer if l.type == "SoftmaxWithLoss"]
    assert len(loss) == 1 and not len(loss[0].top)
    layers = [l for l in param.layer if l.type != "WindowData"]
    del param.layer[:]
    data = param.layer.add(name="data", type="Input", top=["data", "label"])
    data.input_param.shape.add(dim=[1, 3, 227, 227])
    data.input_param.shape.add(dim=[1])
    param.layer.extend(layers)
    net = caffe.Net(param, caffe.TRAIN)
    assert net.top_names[loss[0].name] == ["(automatic)"]
    assert net.blob_loss_weights["(automatic)"] == 1.0


# -- Build 6: empty nets ----------------------------------------------------------------------
def test_empty_or_filtered_out_net_names_the_file(tmp_path):
    empty = tmp_path / "empty.prototxt"
    empty.write_text('name: "nothing"\n')
    with pytest.raises(NetError, match=r"net 'nothing' from '.*empty.prototxt' has no layers"):
        caffe.Net(str(empty), caffe.TEST)
    filtered = tmp_path / "train_only.prototxt"
    filtered.write_text('name: "t"\nlayer { name: "d" type: "Input" top: "x" '
                        'input_param { shape { dim: 1 } } include { phase: TRAIN } }\n')
    with pytest.raises(NetError, match=r"train_only.prototxt' keeps none of its 1 layers in "
                                       r"phase TEST"):
        caffe.Net(str(filtered), caffe.TEST)
    with pytest.raises(CaffeError, match="has no layers"):
        caffe.Net(caffe_pb2.NetParameter(name="x"), caffe.TEST)
    solver = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed")
    solver.net_param.name = "inline"
    with pytest.raises(NetError, match="net 'inline' from net_param has no layers"):
        caffe.SGDSolver(solver)


# -- Build 7: caffe time on a deploy net --------------------------------------------------
def test_caffe_time_backward_of_a_deploy_net_computes_param_gradients(caffe_root, capsys):
    from caffe.tools.caffe import main
    model = caffe_root / "examples" / "mnist" / "lenet.prototxt"
    text = model.read_text().replace("dim: 64", "dim: 4")
    small = caffe_root / "lenet_deploy_small.prototxt"
    small.write_text(text)
    assert main(["time", "-model", str(small), "-iterations", "2"]) == 0
    err = capsys.readouterr().err
    backward = {m.group(1): float(m.group(2)) for m in
                re.finditer(r"\] +(\w+)\tbackward: ([\d.e+-]+) ms\.", err)}
    assert set(backward) == {"data", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2",
                             "prob"}
    # As BVLC: layers with weights compute their gradients though no loss needs them.
    assert backward["conv2"] > 0 and backward["ip1"] > 0
    assert float(re.search(r"Average Backward pass: ([\d.e+-]+) ms", err).group(1)) > 0


# -- Build 4: BVLC's python/train.py on CPU workers ---------------------------------------
TRAIN_NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 }
                           data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.mark.slow
def test_bvlc_train_py_runs_with_cpu_workers(caffe_root, tmp_path):
    (tmp_path / "net.prototxt").write_text(TRAIN_NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 4\n'
        f'display: 2\nsnapshot_prefix: "{tmp_path / "s"}"\nsolver_mode: GPU\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    run = subprocess.run([sys.executable, str(caffe_root / "python" / "train.py"), "--solver",
                          str(tmp_path / "solver.prototxt"), "--gpus", "0", "1", "--timing"],
                         env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    err = run.stderr
    assert run.returncode == 0, err[-4000:]
    assert "Using devices [0, 1]" in err
    assert err.count("no CUDA device is available") == 2      # one warning per worker
    workers = {m.group(1) for m in re.finditer(r"^I\S+ \S+ +(\d+) \S+\] Iteration 2,", err, re.M)}
    assert len(workers) == 2                                    # both workers trained
    # --timing: the per-layer figures come from the Net hooks and caffe.Timer.
    assert re.search(r"forw +1 +ip : [\d.]+", err) and re.search(r"back +2 +loss : [\d.]+", err)
    assert "solver total:" in err and "allreduce:" in err


# -- Net::Init as BVLC logs it, outputs in its order ----------------------------------------
def test_net_init_log_lines_and_output_order(tmp_path, caplog):
    import logging
    path = tmp_path / "two_outputs.prototxt"
    path.write_text('name: "two"\n'
                    'layer { name: "data" type: "Input" top: "data" top: "data2" '
                    'input_param { shape { dim: 2 dim: 3 } } }\n'
                    'layer { name: "z" type: "InnerProduct" bottom: "data" top: "zeta" '
                    'inner_product_param { num_output: 4 } }\n'
                    'layer { name: "r" type: "ReLU" bottom: "zeta" top: "zeta" }\n'
                    'layer { name: "a" type: "Sigmoid" bottom: "data2" top: "alpha" }\n')
    with caplog.at_level(logging.INFO, logger="caffe"):
        net = caffe.Net(str(path), caffe.TEST)
    assert net.outputs == ["alpha", "zeta"]       # Caffe's std::set: sorted by name
    lines = [r.getMessage() for r in caplog.records]
    # BVLC's lines for this net, in its order (Net::Init, AppendBottom, AppendTop).
    expected = ["Creating Layer data", "data -> data", "data -> data2", "Setting up data",
                "Top shape: 2 3 (6)", "Memory required for data: 48",
                "Creating Layer z", "z <- data", "z -> zeta", "Setting up z",
                "Top shape: 2 4 (8)", "Memory required for data: 80",
                "r <- zeta", "r -> zeta (in-place)", "Memory required for data: 112",
                "a does not need backward computation.",
                "z does not need backward computation.",
                "This network produces output alpha", "This network produces output zeta",
                "Network initialization done."]
    it = iter(lines)
    missing = [e for e in expected if not any(line == e for line in it)]
    assert not missing, (missing, lines)
