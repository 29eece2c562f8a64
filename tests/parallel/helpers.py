"""What the data-parallel tests share: a small net over a 24-record LMDB, solvers for batch 3
and 6, `caffe train` in a subprocess, and readers for its log and snapshots."""
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from caffe import parallel
from caffe.data import array_to_datum, open_db
from caffe.formats import read_caffemodel

ROOT = Path(__file__).resolve().parents[2]

RECORDS = 24
NET = """name: "small"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "db" backend: LMDB batch_size: %(batch)d } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        data_param { source: "db" backend: LMDB batch_size: 6 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: %(hidden)d weight_filler { type: "gaussian" std: 0.3 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        param { name: "square" } param { }
        inner_product_param { num_output: %(hidden)d weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu2" type: "ReLU" bottom: "ip2" top: "ip2" }
layer { name: "ip3" type: "InnerProduct" bottom: "ip2" top: "ip3"
        param { name: "square" } param { }
        inner_product_param { num_output: %(hidden)d weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu3" type: "ReLU" bottom: "ip3" top: "ip3" }
layer { name: "out" type: "InnerProduct" bottom: "ip3" top: "out"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "accuracy" type: "Accuracy" bottom: "out" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "out" bottom: "label" top: "loss" }
"""
COMMON = """net: "%(net)s" snapshot_prefix: "%(out)s/s" random_seed: 7 solver_mode: CPU
display: 1 test_iter: 2 test_interval: 3 max_iter: 6 snapshot: 1
"""
SOLVERS = {
    # Layer-wise buckets (one per layer below), momentum, decay, a step schedule.
    "sgd": """type: "SGD" base_lr: 0.1 momentum: 0.9 weight_decay: 0.01
              lr_policy: "multistep" stepvalue: 2 stepvalue: 4 gamma: 0.5""",
    # Gradients accumulated over two passes (buckets leave in the second), then clipped.
    "adam": """type: "Adam" base_lr: 0.02 momentum: 0.9 momentum2: 0.999 lr_policy: "fixed"
               iter_size: 2 clip_gradients: 0.5
               regularization_type: "L1" weight_decay: 0.001""",
}
LOSS = re.compile(r"Iteration (\d+)(?: \(.*?\))?, loss = (\S+)")
TEST_OUTPUT = re.compile(r"Iteration (\d+), Testing net|Test net output #\d+: (\w+) = (\S+)")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                        "CAFFE_LAUNCHER_PID", "CAFFE_BUCKET_MB", "CAFFE_DIST_TIMEOUT",
                        "CAFFE_DIST_HEARTBEAT", "CAFFE_RDZV_TIMEOUT")}
    env.update(PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
               OMP_NUM_THREADS="1", **extra)
    return env


def caffe_train(folder, *args, env=None, log="log.txt"):
    """Start `caffe train <args>` in folder, its output going to folder/log."""
    with open(folder / log, "w") as out:        # the child keeps its own copy
        return subprocess.Popen([sys.executable, "-m", "caffe.tools.caffe", "train", *args],
                                cwd=folder, env=env or clean_env(), stdout=out,
                                stderr=subprocess.STDOUT)


def finish(proc, folder, log="log.txt", timeout=120):
    code = proc.wait(timeout)
    return code, (folder / log).read_text()


def wait_for(path, pattern, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and re.search(pattern, path.read_text()):
            return
        time.sleep(0.1)
    raise AssertionError(f"'{pattern}' did not appear in {path} within {timeout} s:\n"
                         f"{path.read_text() if path.exists() else ''}")


def make_folder(folder, solver="sgd", hidden=8):
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "db").exists():
        rng = np.random.default_rng(0)
        with open_db(folder / "db", "lmdb", "new") as db:
            for i in range(RECORDS):
                x = rng.normal(size=(1, 4, 4)).astype(np.float32)
                x[0, 0, i % 3] += 2
                db.put(f"{i:08d}", array_to_datum(x, i % 3).SerializeToString())
    for batch in (3, 6):
        (folder / f"net{batch}.prototxt").write_text(NET % {"batch": batch, "hidden": hidden})
    for batch in (3, 6):
        (folder / f"out{batch}").mkdir(exist_ok=True)
        (folder / f"{solver}{batch}.prototxt").write_text(
            COMMON % {"net": f"net{batch}.prototxt", "out": f"out{batch}"} +
            textwrap.dedent(SOLVERS[solver]) + "\n")
    return folder


def losses(log):
    return {int(i): float(v) for i, v in LOSS.findall(log)}


def scores(log):
    out, iteration = {}, None
    for it, name, value in TEST_OUTPUT.findall(log):
        if it:
            iteration = int(it)
        else:
            out[(iteration, name)] = float(value)
    return out


def weights(path):
    return [np.array(b.data) for layer in read_caffemodel(path).layer for b in layer.blobs]


def assert_weights_close(a, b, tol=1e-4):
    wa, wb = weights(a), weights(b)
    assert len(wa) == len(wb) and wa
    for x, y in zip(wa, wb):
        np.testing.assert_allclose(x, y, rtol=0, atol=tol, err_msg=f"{a} vs {b}")


def assert_same_training(folder, single, double):
    """The log of one process on batch 6 (`single`) and that of worker 0 of two on batch 3
    each (`double`): the same losses, snapshots and test scores, iteration by iteration."""
    one, two = losses(single), losses(double)
    assert sorted(one) == list(range(7)) and sorted(two) == sorted(one)
    for i in one:
        assert two[i] == pytest.approx(one[i], abs=1e-4), f"iteration {i}"
    for i in range(1, 7):
        assert_weights_close(folder / f"out6/s_iter_{i}.caffemodel",
                             folder / f"out3/s_iter_{i}.caffemodel")
    # Worker 0 alone tests, on the same weights, and writes snapshots.
    t1, t2 = scores(single), scores(double)
    assert set(t1) == set(t2) and {i for i, _ in t1} == {0, 3, 6}
    for key in t1:
        assert t2[key] == pytest.approx(t1[key], abs=1e-4), key
    assert sorted(os.listdir(folder / "out3")) == sorted(os.listdir(folder / "out6"))


LONG = """net: "net3.prototxt" type: "SGD" base_lr: 0.01 momentum: 0.9 lr_policy: "fixed"
display: 20 max_iter: 1000000 snapshot_prefix: "out3/s" solver_mode: CPU random_seed: 1
"""


def start_pair(folder, solvers=("long.prototxt", "long.prototxt"), **extra):
    """Two workers started torchrun-style: RANK, WORLD_SIZE, MASTER_ADDR/PORT, LOCAL_RANK."""
    port = parallel.free_port()
    procs = []
    for rank in range(2):
        env = clean_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                        RANK=str(rank), LOCAL_RANK=str(rank), **extra)
        procs.append(caffe_train(folder, "-solver", solvers[rank], env=env,
                                 log=f"worker{rank}.txt"))
    return procs
