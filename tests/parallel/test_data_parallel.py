"""Data-parallel training in several processes on the CPU (gloo), mostly through `caffe train`.

Two workers with batch B must step as one process with batch 2B on the same data (loss and
weights at every iteration); a parallel run resumed from its snapshot must match the run that
went on; a worker that dies or hangs must make the others stop with a clear error.
"""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch.distributed as dist

from caffe import parallel
from tests.parallel.helpers import (LONG, NET, SOLVERS, assert_same_training,
                                    assert_weights_close, caffe_train,
                                    clean_env, finish, losses, make_folder, scores, start_pair,
                                    wait_for)

# Each test starts 2-3 Python processes (a few seconds each on 2 cores).
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                 reason="torch.distributed with gloo is not available")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each solver trained once by 1 process (batch 6) and once by 2 workers (batch 3)."""
    cache = {}

    def get(solver):
        if solver not in cache:
            folder = make_folder(tmp_path_factory.mktemp(solver), solver)
            single = caffe_train(folder, "-solver", f"{solver}6.prototxt", log="single.txt")
            code1, log1 = finish(single, folder, "single.txt")
            # One bucket per layer, so that the overlapped path and shared params are exercised.
            env = clean_env(CAFFE_BUCKET_MB="0")
            double = caffe_train(folder, "-solver", f"{solver}3.prototxt", "-workers", "2",
                                 env=env, log="double.txt")
            code2, log2 = finish(double, folder, "double.txt")
            assert code1 == 0, log1
            assert code2 == 0, log2
            cache[solver] = folder, log1, log2
        return cache[solver]
    return get


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_two_workers_step_as_one_with_twice_the_batch(runs, solver):
    folder, single, double = runs(solver)
    assert_same_training(folder, single, double)
    assert "[worker 1]" not in double     # worker 1 stays quiet
    assert double.count("Testing net") == single.count("Testing net")


def test_two_workers_in_bf16_step_as_one(tmp_path):
    # Half precision over gloo: bf16 gradients are averaged, each worker updates its float32
    # masters alike; the result follows one bf16 process with the combined batch.
    folder = make_folder(tmp_path, "sgd")
    logs = []
    for solver, extra in (("sgd6.prototxt", ()), ("sgd3.prototxt", ("-workers", "2"))):
        log = f"{solver}.txt"
        code, text = finish(caffe_train(folder, "-solver", solver, "-precision", "bf16", *extra,
                                        log=log), folder, log)
        assert code == 0, text
        assert "Computing in bfloat16 with float32 master weights" in text
        logs.append(text)
    one, two = losses(logs[0]), losses(logs[1])
    assert sorted(one) == sorted(two) == list(range(7))
    for i in one:
        assert two[i] == pytest.approx(one[i], abs=0.01), f"iteration {i}"
    # Snapshots hold the float32 masters; bf16 rounding of the summed gradients separates
    # the two runs by about 1e-4 here.
    assert_weights_close(folder / "out6/s_iter_6.caffemodel", folder / "out3/s_iter_6.caffemodel",
                         tol=1e-3)


def test_resumed_parallel_run_matches_the_uninterrupted_one(runs):
    folder, _, uninterrupted = runs("sgd")
    # A resumed run reads its database from the first record again (as Caffe's): resume at
    # iteration 4, where 4 x 2 workers x 3 = 24 records have gone by, one pass exactly.
    (folder / "resumed").mkdir()
    text = (folder / "sgd3.prototxt").read_text()
    (folder / "resume.prototxt").write_text(text.replace('"out3/s"', '"resumed/s"'))
    resumed = caffe_train(folder, "-solver", "resume.prototxt", "-workers", "2", "-snapshot",
                          "out3/s_iter_4.solverstate", log="resumed.txt")
    code, log = finish(resumed, folder, "resumed.txt")
    assert code == 0, log
    assert "Restored solver state from out3/s_iter_4.solverstate at iteration 4" in log
    a, b = losses(uninterrupted), losses(log)
    assert sorted(b) == [4, 5, 6]
    for i in b:
        assert b[i] == pytest.approx(a[i], abs=1e-4), f"iteration {i}"
    for i in (5, 6):
        assert_weights_close(folder / f"out3/s_iter_{i}.caffemodel",
                             folder / f"resumed/s_iter_{i}.caffemodel")
    assert scores(log) == pytest.approx(
        {k: v for k, v in scores(uninterrupted).items() if k[0] == 6}, abs=1e-4)


def test_killed_worker_stops_the_other_with_a_clear_error(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "long.prototxt").write_text(LONG)
    w0, w1 = start_pair(folder)
    try:
        wait_for(folder / "worker0.txt", r"Iteration 40 ")
        w1.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code, log = finish(w0, folder, "worker0.txt", timeout=30)
        assert time.monotonic() - killed < 30
    finally:
        for p in (w0, w1):
            p.kill()
            p.wait()
    assert code == 1
    assert re.search(r"worker 0: lost contact with the other workers during the [\w-]+ [\w-]+ of "
                     rf"iteration \d+: worker 1 \(pid {w1.pid}\) is no longer running", log), log


def test_hung_worker_times_out(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "long.prototxt").write_text(LONG)
    w0, w1 = start_pair(folder, CAFFE_DIST_TIMEOUT="5")
    try:
        wait_for(folder / "worker0.txt", r"Iteration 40 ")
        w1.send_signal(signal.SIGSTOP)
        code, log = finish(w0, folder, "worker0.txt", timeout=30)
    finally:
        for p in (w0, w1):
            p.kill()
            p.wait()
    assert code == 1
    assert "no answer within 5 s (CAFFE_DIST_TIMEOUT): a worker hangs" in log, log


def test_launcher_reports_a_killed_worker_and_fails(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "long.prototxt").write_text(LONG)
    launcher = caffe_train(folder, "-solver", "long.prototxt", "-workers", "2")
    try:
        wait_for(folder / "log.txt", r"Iteration 40 ")
        pid = int(re.search(r"Worker 1: pid (\d+)", (folder / "log.txt").read_text())[1])
        os.kill(pid, signal.SIGKILL)
        code, log = finish(launcher, folder, timeout=30)
    finally:
        launcher.kill()
        launcher.wait()
    assert code == 1
    assert f"Worker 1 (pid {pid}) was killed by signal SIGKILL" in log
    assert f"worker 1 (pid {pid}) is no longer running" in log
    assert "Training failed: workers 0, 1 did not finish" in log


def test_sigint_stops_every_worker_and_worker_0_snapshots(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "long.prototxt").write_text(LONG)
    launcher = caffe_train(folder, "-solver", "long.prototxt", "-workers", "2")
    try:
        wait_for(folder / "log.txt", r"Iteration 40 ")
        launcher.send_signal(signal.SIGINT)
        code, log = finish(launcher, folder, timeout=30)
    finally:
        launcher.kill()
        launcher.wait()
    assert code == 0, log
    assert log.count("Optimization stopped early.") == 1
    snapshots = sorted(os.listdir(folder / "out3"))
    assert len(snapshots) == 2 and snapshots[0].endswith(".caffemodel"), snapshots


def test_workers_with_different_nets_refuse_to_train(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "long.prototxt").write_text(LONG)
    (folder / "wide.prototxt").write_text(NET % {"batch": 3, "hidden": 9})
    (folder / "long_wide.prototxt").write_text(LONG.replace("net3.prototxt", "wide.prototxt"))
    procs = start_pair(folder, ("long.prototxt", "long_wide.prototxt"))
    try:
        results = [finish(p, folder, f"worker{r}.txt", timeout=60) for r, p in enumerate(procs)]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    for code, log in results:
        assert code == 1
        assert "trains a different setup (params differ)" in log, log


PYCAFFE_SCRIPT = """
import sys
import numpy as np, torch
from caffe import parallel
from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from caffe.solvers import get_solver

rank, count, uid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
parallel.set_solver_count(count)
parallel.set_solver_rank(rank)
parallel.set_multiprocess(True)
# BVLC's other mode: one all-reduce of all gradients once backward is over.
param = parse_text('type: "Nesterov" base_lr: 0.2 momentum: 0.8 weight_decay: 0.02 '
                   'lr_policy: "fixed" random_seed: 3 layer_wise_reduce: false',
                   caffe_pb2.SolverParameter())
parse_text('''
layer { name: "in" type: "Input" top: "x" top: "y"
        input_param { shape { dim: %d dim: 4 } shape { dim: %d } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "loss" }
''' % (12 // count, 12 // count), param.net_param)
solver = get_solver(param, dtype=torch.float64)
rng = np.random.default_rng(0)
x = rng.normal(size=(12, 4))
y = (x[:, 0] > 0).astype(float) + (x[:, 1] > 0)

def feed():
    solver.net.blobs["x"].data[...] = x[rank::count] * (1 + solver.iter % 2)
    solver.net.blobs["y"].data[...] = y[rank::count]

if count > 1:
    nccl = parallel.NCCL(solver, uid)
    nccl.bcast()
    solver.add_callback(nccl)
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)
solver.add_callback(feed)
solver.step(5)
if rank == 0:
    np.save(out, np.concatenate([p.data_numpy().ravel() for p in solver.net.learnable_params]))
"""


def test_pycaffe_nccl_api_matches_one_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(PYCAFFE_SCRIPT)
    uid = parallel.NCCL.new_uid()

    def run(rank, count, out):
        return subprocess.Popen([sys.executable, str(script), str(rank), str(count), uid,
                                 str(tmp_path / out)], env=clean_env(), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    procs = [run(0, 1, "one.npy"), run(0, 2, "two.npy"), run(1, 2, "unused.npy")]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)
    one, two = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-10)
    assert not (tmp_path / "unused.npy").exists()
