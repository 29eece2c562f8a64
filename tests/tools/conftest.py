"""What the tools' tests share: a tiny net and solver in a working folder, and a BVLC log.

The tiny net keeps its batch in two Parameter layers with lr_mult 0, so the data travels
inside the .caffemodel: `-weights init.caffemodel` feeds it (and exercises fine-tuning).
"""
import numpy as np
import pytest

import caffe

NET = """name: "tiny"
layer { name: "data" type: "Parameter" top: "data" param { lr_mult: 0 }
        parameter_param { shape { dim: 6 dim: 4 } } }
layer { name: "label" type: "Parameter" top: "label" param { lr_mult: 0 }
        parameter_param { shape { dim: 6 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = """net: "net.prototxt"
test_iter: 2 test_interval: 10
base_lr: 0.5 momentum: 0.5 lr_policy: "inv" gamma: 0.1 power: 0.75
display: 5 max_iter: 20 snapshot: 10 snapshot_prefix: "tiny" random_seed: 3
solver_mode: CPU
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The current folder: net.prototxt, solver.prototxt and init.caffemodel (the batch)."""
    missing = {"Parameter", "InnerProduct", "Accuracy", "SoftmaxWithLoss"} - \
        set(caffe.layer_type_list())
    if missing:
        pytest.fail(f"layers not registered: {sorted(missing)}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    net = caffe.Net("net.prototxt", caffe.TRAIN)
    labels = np.array([0, 1, 2, 0, 1, 2])
    net.params["data"][0].data[...] = np.eye(3, 4)[labels] * 3 + \
        np.random.default_rng(0).normal(scale=0.1, size=(6, 4))
    net.params["label"][0].data[...] = labels
    net.save("init.caffemodel")
    return tmp_path


BVLC_LOG = """\
I0212 10:00:00.000000  1234 solver.cpp:279] Solving LeNet
I0212 10:00:00.000100  1234 solver.cpp:280] Learning Rate Policy: inv
I0212 10:00:00.100000  1234 solver.cpp:337] Iteration 0, Testing net (#0)
I0212 10:00:01.000000  1234 solver.cpp:404]     Test net output #0: accuracy = 0.0825
I0212 10:00:01.000000  1234 solver.cpp:404]     Test net output #1: loss = 2.30 (* 1 = 2.30 loss)
I0212 10:00:01.100000  1234 solver.cpp:228] Iteration 0, loss = 2.31
I0212 10:00:01.100000  1234 solver.cpp:244]     Train net output #0: loss = 2.31 (* 1 = 2.31 loss)
I0212 10:00:01.100000  1234 sgd_solver.cpp:106] Iteration 0, lr = 0.01
I0212 10:00:03.000000  1234 solver.cpp:228] Iteration 100, loss = 0.2
I0212 10:00:03.000000  1234 solver.cpp:244]     Train net output #0: loss = 0.2 (* 1 = 0.2 loss)
I0212 10:00:03.000000  1234 sgd_solver.cpp:106] Iteration 100, lr = 0.00992565
"""
