"""Crash safety of `caffe train`: SIGKILL at any moment leaves only loadable snapshots.

Snapshots are written to a temporary file that is renamed into place, so a file under its
final name is complete or absent. The test kills `caffe train` 20 times at random moments
(half of them right after a "Snapshotting" log line, while the files are being written),
checks that every snapshot file present loads, resumes from the last complete snapshot (or
starts over when there is none yet) and, once a run completes, that its weights equal those of
a run that was never interrupted (the net and data are deterministic).
"""
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import caffe
from caffe import formats
from caffe.proto import caffe_pb2
from caffe.tools import caffe as caffe_tool

ROOT = Path(__file__).resolve().parents[1]
KILLS = 20
CHAINS = 2          # two independent training runs killed in parallel (one per core)

NET = """
name: "crash"
layer { name: "data" type: "DummyData" top: "x" top: "t"
        dummy_data_param { shape { dim: 4 dim: 256 } shape { dim: 4 dim: 256 }
                           data_filler { type: "constant" value: 0.5 }
                           data_filler { type: "constant" value: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 256 weight_filler { type: "constant" value: 0.001 }
                              bias_filler { type: "constant" value: 0.2 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
"""
SOLVER = """
net: "net.prototxt"
base_lr: 0.002 momentum: 0.9 lr_policy: "fixed" max_iter: {max_iter}
snapshot: 10 snapshot_prefix: "snap/crash" display: 0 snapshot_format: {fmt}
"""
MAX_ITER = 300
SNAPSHOT = re.compile(r"crash_iter_(\d+)\.(caffemodel|solverstate)(\.h5)?$")


def _write_run(folder, fmt):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snap").mkdir()
    (folder / "net.prototxt").write_text(NET)
    (folder / "solver.prototxt").write_text(SOLVER.format(max_iter=MAX_ITER, fmt=fmt))


def _snapshots(folder):
    """{iteration: {kind: path}} of the files under their final names."""
    found = {}
    for path in (folder / "snap").iterdir():
        match = SNAPSHOT.match(path.name)
        if match:
            found.setdefault(int(match.group(1)), {})[match.group(2)] = path
    return found


def _check_loadable(folder, net):
    """Every snapshot file present is complete: weights load, states parse and name them."""
    for iteration, files in _snapshots(folder).items():
        if "caffemodel" in files:
            net.copy_from(str(files["caffemodel"]))
        if "solverstate" in files:
            path = str(files["solverstate"])
            if path.endswith(".h5"):
                import h5py
                with h5py.File(path, "r") as f:
                    assert int(f["iter"][0]) == iteration
                    learned = f["learned_net"][()].decode()
            else:
                state = formats.read_binary_proto(path, caffe_pb2.SolverState())
                assert state.iter == iteration and len(state.history) == 2
                learned = state.learned_net
            # The weights are written before the state that names them.
            assert (folder / learned).exists(), learned


class _Train:
    """One `caffe train` process whose log lines are collected as they come."""

    def __init__(self, folder, *flags):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "caffe.tools.caffe", "train", "-solver", "solver.prototxt",
             *flags], cwd=folder, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
            text=True, bufsize=1)
        self.lines, self.event = [], threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            with self.event:
                self.lines.append(line)
                self.event.notify_all()
        with self.event:
            self.lines.append(None)
            self.event.notify_all()

    def wait_for(self, text, after=0, timeout=60):
        """Index of the first line from `after` on containing text; None if the log ended."""
        deadline = time.time() + timeout
        with self.event:
            while True:
                for i in range(after, len(self.lines)):
                    if self.lines[i] is None:
                        return None
                    if text in self.lines[i]:
                        return i
                after = len(self.lines)
                left = deadline - time.time()
                assert left > 0, f"no '{text}' in time:\n{''.join(filter(None, self.lines))}"
                self.event.wait(left)

    def log(self):
        return "".join(line for line in self.lines if line)


def _chain(base, fmt, kills, rng, reference, report):
    net = caffe.Net(str(_write_reference_net(base)), caffe.TEST)
    run, folder, done_kills = 0, None, 0
    while done_kills < kills or folder is not None:
        if folder is None:
            run += 1
            folder = base / f"run{run}"
            _write_run(folder, fmt)
        complete = [i for i, f in _snapshots(folder).items() if len(f) == 2]
        flags = []
        if complete:
            flags = ["-snapshot", str(_snapshots(folder)[max(complete)]["solverstate"]
                                      .relative_to(folder))]
        temps = {p.name for p in (folder / "snap").glob("*.tmp")}
        train = _Train(folder, *flags)
        if done_kills < kills:
            start = train.wait_for("Starting Optimization")
            if start is not None:
                if done_kills % 2 == 0:
                    # While a snapshot is being written: right after its log line.
                    hit = train.wait_for("Snapshotting", start)
                    if hit is not None:
                        time.sleep(rng.uniform(0, 0.01))
                else:
                    time.sleep(rng.uniform(0, 0.4))
            train.proc.send_signal(signal.SIGKILL)
        code = train.proc.wait(60)
        log = train.log()
        if code == -signal.SIGKILL:
            done_kills += 1
            report["kills"] += 1
            # A new temporary file left behind: the kill came in the middle of a write.
            report["mid_write"] += bool({p.name for p in (folder / "snap").glob("*.tmp")} - temps)
            _check_loadable(folder, net)
            continue
        assert code == 0, log
        if flags[:1] == ["-snapshot"]:
            assert "Restored solver state" in log or "Resuming from" in log, log
        assert "Optimization Done." in log, log
        _check_loadable(folder, net)
        final = caffe.Net(str(folder / "net.prototxt"), caffe.TEST)
        suffix = ".caffemodel.h5" if fmt == "HDF5" else ".caffemodel"
        final.copy_from(str(folder / "snap" / f"crash_iter_{MAX_ITER}{suffix}"))
        for got, want in zip(final.params["ip"], reference):
            np.testing.assert_allclose(got.data, want, rtol=1e-5, atol=1e-7)
        report["completed"] += 1
        folder = None


def _write_reference_net(base):
    base.mkdir(parents=True, exist_ok=True)
    (base / "net.prototxt").write_text(NET)
    return base / "net.prototxt"


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_resumable_snapshots(tmp_path):
    ref = tmp_path / "reference"
    _write_run(ref, "BINARYPROTO")
    cwd = os.getcwd()
    os.chdir(ref)
    try:
        solver = caffe.get_solver("solver.prototxt")
        solver.param.snapshot = 0
        solver.param.snapshot_after_train = False
        solver.solve()
    finally:
        os.chdir(cwd)
    reference = [p.data.copy() for p in solver.net.params["ip"]]
    report = {"kills": 0, "mid_write": 0, "completed": 0}
    errors = []

    def chain(index):
        try:
            _chain(tmp_path / f"chain{index}", ("BINARYPROTO", "HDF5")[index % 2],
                   KILLS // CHAINS, random.Random(1234 + index), reference, report)
        except BaseException as e:  # noqa: BLE001  re-raised in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=chain, args=(i,)) for i in range(CHAINS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    assert report["kills"] == KILLS and report["completed"] >= CHAINS, report
    # Some kills must have interrupted a snapshot write (a .tmp file was left behind).
    assert report["mid_write"] >= 1, report
    print(f"crash safety: {report}")


def _tiny_train_dir(tmp_path):
    _write_run(tmp_path, "BINARYPROTO")
    (tmp_path / "solver.prototxt").write_text(SOLVER.format(max_iter=20, fmt="BINARYPROTO"))
    return tmp_path


def _train(folder, *flags):
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return caffe_tool.main(["train", "-solver", "solver.prototxt", *flags])
    finally:
        os.chdir(cwd)


def test_second_run_replaces_snapshots_with_one_warning_each(tmp_path, capsys):
    # BVLC's behaviour: a second run in the same folder writes its snapshots over the first
    # run's (atomically), naming each file it replaces that it did not write.
    folder = _tiny_train_dir(tmp_path)
    assert _train(folder) == 0
    snap = folder / "snap"
    before = {p.name: p.stat().st_mtime_ns for p in snap.iterdir()}
    capsys.readouterr()
    assert _train(folder) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("W") and "Replacing" in line]
    replaced = sorted(n for n in before if n.endswith((".caffemodel", ".solverstate")))
    assert sorted(w.split("Replacing ", 1)[1].split(",")[0].rsplit("/", 1)[-1]
                  for w in warnings) == replaced
    assert all(p.stat().st_mtime_ns != before[p.name] for p in snap.iterdir() if p.name in before)
    assert not list(snap.glob("*.tmp"))
    # The old flag is still accepted.
    assert _train(folder, "-overwrite_snapshots") == 0


def test_resume_rewrites_the_interrupted_runs_later_snapshots(tmp_path, capsys):
    folder = _tiny_train_dir(tmp_path)
    assert _train(folder) == 0
    snap = folder / "snap"
    # As if killed between the weights and the state of iteration 20.
    (snap / "crash_iter_20.solverstate").unlink()
    assert _train(folder, "-snapshot", "snap/crash_iter_10.solverstate") == 0
    assert (snap / "crash_iter_20.solverstate").exists()
    assert "Replacing snap/crash_iter_20.caffemodel" in capsys.readouterr().err


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "w.caffemodel"
    formats.atomic_write(path, b"old")

    def failing(f):
        f.write(b"partial")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        formats.atomic_write(path, failing)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.caffemodel"]
    # Not the private 0600 of the temporary file: what open() would have given.
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

