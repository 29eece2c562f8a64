"""Training across two network hosts: torchrun on each of two namespaces joined by a veth pair.

The same checks as on one machine (test_data_parallel.py), over a real network stack: 2 hosts
with batch 3 step as 1 process with batch 6, worker 0 alone tests and writes one set of
snapshots, a snapshot resumes on another number of hosts with the same effective batch, and
a lost host (killed, cut off, stopped, never started) ends the run in bounded time with an
error naming it.
"""
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from caffe.formats import read_caffemodel, read_binary_proto
from caffe.proto import caffe_pb2
from tests.parallel.helpers import (COMMON, LONG, SOLVERS, assert_same_training,
                                    assert_weights_close, caffe_train,
                                    clean_env, finish, losses, make_folder, wait_for)
from tests.netns import NetnsUnavailable, TwoHosts

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                 reason="torch.distributed with gloo is not available")]

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
PORT = 29400


REQUIRED = os.environ.get("PYCAFFE_REQUIRE_NETNS") == "1"      # CI: root, iproute2


@pytest.fixture(scope="module")
def hosts():
    try:
        pair = TwoHosts.create()
    except NetnsUnavailable as e:
        if REQUIRED:
            pytest.fail(f"{e} (PYCAFFE_REQUIRE_NETNS=1)")
        pytest.skip(str(e))
    try:
        yield pair
    finally:
        pair.close()            # also after a failure: no namespace is left behind


def torchrun(hosts, folder, *args, nodes=(0, 1), env=None, log="host%d.txt", rdzv_timeout=30):
    """`torchrun ... -m caffe.tools.caffe train <args>` on each host of `nodes`."""
    procs = []
    for rank, host in enumerate(nodes):
        argv = [TORCHRUN, "--nnodes", str(len(nodes)), "--nproc-per-node", "1",
                "--node-rank", str(rank), "--rdzv-endpoint", f"{hosts.addr[nodes[0]]}:{PORT}",
                "--rdzv-conf", f"timeout={rdzv_timeout}", "--monitor-interval", "0.5",
                "-m", "caffe.tools.caffe", "train", *args]
        with open(folder / (log % host), "w") as out:
            procs.append(hosts.popen(host, argv, cwd=folder, env=env or clean_env(),
                                     stdout=out, stderr=subprocess.STDOUT))
    return procs


def finish_all(procs, folder, logs, timeout=120):
    return [finish(p, folder, log, timeout) for p, log in zip(procs, logs)]


@pytest.fixture(scope="module")
def trained(hosts, tmp_path_factory):
    """SGD trained by 1 process with batch 6, by 2 hosts with batch 3 and by 1 process with
    batch 3 x iter_size 2 (three ways of stepping on the same 6 records per iteration)."""
    folder = make_folder(tmp_path_factory.mktemp("hosts"), "sgd")
    (folder / "accum").mkdir()
    (folder / "accum.prototxt").write_text(
        COMMON % {"net": "net3.prototxt", "out": "accum"} + textwrap.dedent(SOLVERS["sgd"]) +
        "\niter_size: 2\n")
    single = caffe_train(folder, "-solver", "sgd6.prototxt", log="single.txt")
    accum = caffe_train(folder, "-solver", "accum.prototxt", log="accum.txt")
    # One bucket per layer: the overlapped all-reduce crosses the veth layer by layer.
    pair = torchrun(hosts, folder, "-solver", "sgd3.prototxt", env=clean_env(CAFFE_BUCKET_MB="0"))
    results = finish_all([single, accum, *pair], folder,
                         ["single.txt", "accum.txt", "host0.txt", "host1.txt"])
    for code, log in results:
        assert code == 0, log
    return folder, *(log for _, log in results)


def test_two_hosts_step_as_one_process_with_the_combined_batch(trained):
    folder, single, _, host0, host1 = trained
    assert_same_training(folder, single, host0)
    # The second host neither tests nor logs steps.
    assert "Testing net" not in host1 and "loss =" not in host1 and "Snapshotting" not in host1
    assert "Worker 0 of 2 (CPU, gloo)" in host0


def test_snapshot_of_two_hosts_resumes_on_one_with_the_same_effective_batch(trained):
    folder = trained[0]
    (folder / "one").mkdir()
    text = (folder / "sgd3.prototxt").read_text().replace('"out3/s"', '"one/s"')
    (folder / "resume1.prototxt").write_text(text)
    state = read_binary_proto(folder / "out3/s_iter_4.solverstate", caffe_pb2.SolverState())
    assert (state.world_size, state.iter_size) == (2, 1)
    # Iteration 4 starts a new pass over the 24 records (4 x 6), where a resumed run starts.
    proc = caffe_train(folder, "-solver", "resume1.prototxt", "-snapshot",
                       "out3/s_iter_4.solverstate", log="resume1.txt")
    code, log = finish(proc, folder, "resume1.txt")
    assert code == 0, log
    assert ("The snapshot was trained by 2 workers x iter_size 1; on 1 worker iter_size "
            "becomes 2 to keep the effective batch") in log
    a, b = losses(trained[3]), losses(log)
    assert sorted(b) == [4, 5, 6]
    for i in (4, 5):    # the loss after the last step comes from one forward pass (BVLC's)
        assert b[i] == pytest.approx(a[i], abs=1e-4), f"iteration {i}"
    for i in (5, 6):
        assert_weights_close(folder / f"out3/s_iter_{i}.caffemodel",
                             folder / f"one/s_iter_{i}.caffemodel")


def test_snapshot_of_one_process_resumes_on_two_hosts(hosts, trained):
    folder, _, accum = trained[:3]
    one, two = losses(trained[1]), losses(accum)
    for i in range(6):      # batch 3 x iter_size 2 is batch 6 (but for the last, 1-pass loss)
        assert two[i] == pytest.approx(one[i], abs=1e-4), f"iteration {i}"
    for i in range(1, 7):
        assert_weights_close(folder / f"out6/s_iter_{i}.caffemodel",
                             folder / f"accum/s_iter_{i}.caffemodel")
    (folder / "two").mkdir()
    text = (folder / "sgd3.prototxt").read_text().replace('"out3/s"', '"two/s"')
    (folder / "resume2.prototxt").write_text(text)
    pair = torchrun(hosts, folder, "-solver", "resume2.prototxt", "-snapshot",
                    "accum/s_iter_4.solverstate", log="resume2_%d.txt")
    (code0, log0), (code1, log1) = finish_all(pair, folder, ["resume2_0.txt", "resume2_1.txt"])
    assert code0 == 0 and code1 == 0, log0 + log1
    # 1 worker x iter_size 2 = 2 workers x iter_size 1: nothing to change, nothing to say.
    assert "iter_size becomes" not in log0 and "Cannot keep" not in log0
    b = losses(log0)
    assert sorted(b) == [4, 5, 6]
    for i in b:
        assert b[i] == pytest.approx(one[i], abs=1e-4), f"iteration {i}"
    for i in (5, 6):
        assert_weights_close(folder / f"out6/s_iter_{i}.caffemodel",
                             folder / f"two/s_iter_{i}.caffemodel")


# -- faults ------------------------------------------------------------------------------------
def _long(folder, snapshot=0):
    (folder / "long.prototxt").write_text(LONG + (f"snapshot: {snapshot}\n" if snapshot else ""))


def _stop_all(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def _caffe_pid(hosts, host):
    """The caffe worker's pid on `host` (not torchrun's agent)."""
    for pid in hosts.pids(host):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"caffe.tools.caffe" in cmd and not any(b"torchrun" in c for c in cmd):
            return pid
    raise AssertionError(f"no caffe worker on host {host}")


def test_killed_host_stops_the_other_and_leaves_its_last_snapshot_whole(hosts, tmp_path):
    folder = make_folder(tmp_path)
    _long(folder, snapshot=20)
    procs = torchrun(hosts, folder, "-solver", "long.prototxt",
                     env=clean_env(CAFFE_DIST_HEARTBEAT="10"))
    try:
        wait_for(folder / "host0.txt", r"Iteration 40 ")
        hosts.kill(0)                    # host 0: worker 0, the snapshot writer and the store
        killed = time.monotonic()
        code, log = finish(procs[1], folder, "host1.txt", timeout=60)
        took = time.monotonic() - killed
    finally:
        _stop_all(procs)
    assert code != 0
    assert took < 20, f"{took:.1f} s"
    assert re.search(r"worker 1: lost contact with the other workers during the [\w-]+ [\w-]+ of "
                     r"iteration \d+: worker 0 \(pid \d+ on host0\) has stopped answering", log), log
    last = max(int(m) for m in re.findall(r"s_iter_(\d+)\.solverstate$",
                                          "\n".join(os.listdir(folder / "out3")), re.M))
    state = read_binary_proto(folder / f"out3/s_iter_{last}.solverstate", caffe_pb2.SolverState())
    assert state.iter == last and state.world_size == 2
    assert read_caffemodel(folder / f"out3/s_iter_{last}.caffemodel").layer


def test_link_down_stops_both_hosts_naming_the_other(hosts, tmp_path):
    folder = make_folder(tmp_path)
    _long(folder)
    procs = torchrun(hosts, folder, "-solver", "long.prototxt",
                     env=clean_env(CAFFE_DIST_HEARTBEAT="4"))
    try:
        wait_for(folder / "host0.txt", r"Iteration 40 ")
        hosts.link(up=False)
        down = time.monotonic()
        (code0, log0), (code1, log1) = finish_all(procs, folder, ["host0.txt", "host1.txt"], 60)
        took = time.monotonic() - down
    finally:
        hosts.link(up=True)
        _stop_all(procs)
    assert code0 != 0 and code1 != 0
    assert took < 30, f"{took:.1f} s"
    assert re.search(r"worker 0: worker 1 \(pid \d+ on host1\) has not been heard from for 4 s "
                     r"\(CAFFE_DIST_HEARTBEAT\)", log0), log0
    assert re.search(r"worker 1: the rendezvous store at [\d.]+:\d+, served by node 0's torchrun "
                     r"agent \(the host of worker 0\), has not answered", log1), log1


def test_stopped_worker_is_reported_within_the_heartbeat(hosts, tmp_path):
    folder = make_folder(tmp_path)
    _long(folder)
    procs = torchrun(hosts, folder, "-solver", "long.prototxt",
                     env=clean_env(CAFFE_DIST_HEARTBEAT="4"))
    try:
        wait_for(folder / "host0.txt", r"Iteration 40 ")
        pid = _caffe_pid(hosts, 1)
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        code, log = finish(procs[0], folder, "host0.txt", timeout=60)
        took = time.monotonic() - stopped
    finally:
        hosts.kill(1, signal.SIGCONT)
        _stop_all(procs)
    assert code != 0
    assert took < 15, f"{took:.1f} s"        # 4 s of silence, then the agent's shutdown
    assert (f"worker 0: worker 1 (pid {pid} on host1) has not been heard from for 4 s "
            f"(CAFFE_DIST_HEARTBEAT): stopped, hung, or cut off from the network") in log, log


def test_rendezvous_with_a_host_that_never_comes_up_fails_clearly(hosts, tmp_path):
    folder = make_folder(tmp_path)
    _long(folder)

    def alone(host, rank, master):
        env = clean_env(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK="0", MASTER_ADDR=master,
                        MASTER_PORT=str(PORT + 1 + rank), CAFFE_RDZV_TIMEOUT="5")
        with open(folder / f"alone{rank}.txt", "w") as out:
            return hosts.popen(host, [sys.executable, "-m", "caffe.tools.caffe", "train",
                                      "-solver", "long.prototxt"], cwd=folder, env=env,
                               stdout=out, stderr=subprocess.STDOUT)

    start = time.monotonic()
    # Worker 0 waits for a worker 1 that never starts; a worker 1 calls a host 0 where
    # nothing listens.
    procs = [alone(0, 0, hosts.addr[0]), alone(1, 1, hosts.addr[0])]
    try:
        (code0, log0), (code1, log1) = finish_all(procs, folder, ["alone0.txt", "alone1.txt"], 60)
    finally:
        _stop_all(procs)
    assert time.monotonic() - start < 40
    assert code0 == 1 and code1 == 1
    assert f"worker 0: not all the other workers joined at {hosts.addr[0]}:{PORT + 1} within " \
           f"5 s (CAFFE_RDZV_TIMEOUT)" in log0, log0
    assert f"worker 1: worker 0's rendezvous did not answer, or not all workers joined at " \
           f"{hosts.addr[0]}:{PORT + 2} within 5 s (CAFFE_RDZV_TIMEOUT)" in log1, log1
    assert "Traceback" not in log0 + log1
