"""Snapshots: file names and layouts, resume equals uninterrupted training, crash safety."""
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from caffe import formats
from caffe.errors import CaffeError
from caffe.proto import caffe_pb2
from caffe.solvers import SolverError
from tests.solvers.nets import make_solver

ROOT = Path(__file__).resolve().parents[2]
TYPES = {
    "SGD": "momentum: 0.9 weight_decay: 0.01",
    "Nesterov": "momentum: 0.9 weight_decay: 0.01",
    "AdaGrad": "weight_decay: 0.01",
    "RMSProp": "rms_decay: 0.9",
    "AdaDelta": "momentum: 0.9 delta: 1e-6",
    "Adam": "momentum: 0.9 momentum2: 0.99",
}


def solver_for(kind, prefix, fmt="BINARYPROTO", extra=""):
    solver = make_solver(f'type: "{kind}" base_lr: 0.05 lr_policy: "multistep" gamma: 0.5 '
                         f'stepvalue: 2 stepvalue: 5 max_iter: 8 snapshot: 3 '
                         f'snapshot_prefix: "{prefix}" snapshot_format: {fmt} {TYPES[kind]} '
                         f'{extra}')
    solver.net.params["w1"][0].data[...] = np.linspace(-1, 1, 12).reshape(3, 4)
    solver.net.params["w2"][0].data[...] = np.linspace(2, -2, 5)
    solver.net.blobs["t"].data[...] = 0.25
    return solver


def weights(solver):
    return [b.data.copy() for blobs in solver.net.params.values() for b in blobs]


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
@pytest.mark.parametrize("kind", sorted(TYPES))
def test_resume_equals_uninterrupted(tmp_path, kind, fmt):
    full = solver_for(kind, tmp_path / "full", fmt)
    full.solve()
    ext = ".solverstate.h5" if fmt == "HDF5" else ".solverstate"
    for it in (3, 6, 8):  # every 3 iterations, and after training
        assert (tmp_path / f"full_iter_{it}{ext}").exists()
        assert (tmp_path / f"full_iter_{it}.caffemodel{'.h5' if fmt == 'HDF5' else ''}").exists()
    resumed = solver_for(kind, tmp_path / "resumed", fmt)
    resumed.net.params["w1"][0].data[...] = 0  # the snapshot's weights must come back
    resumed.solve(str(tmp_path / f"full_iter_3{ext}"))
    assert resumed.iter == 8 and resumed.current_step == full.current_step == 2
    # .caffemodel.h5 stores float32 (as Caffe<float>), so float64 weights round there
    tol = dict(rtol=1e-5, atol=1e-6) if fmt == "HDF5" else dict(rtol=1e-12, atol=1e-14)
    for a, b in zip(weights(resumed), weights(full)):
        np.testing.assert_allclose(a, b, **tol)
    for a, b in zip(resumed.history, full.history):
        np.testing.assert_allclose(a.data.numpy(), b.data.numpy(), **tol)


def test_binary_state_layout(tmp_path):
    solver = solver_for("Adam", tmp_path / "s")
    solver.step(3)
    state = formats.read_binary_proto(tmp_path / "s_iter_3.solverstate", caffe_pb2.SolverState())
    assert state.iter == 3 and state.current_step == 1
    assert state.learned_net == str(tmp_path / "s_iter_3.caffemodel")
    assert [tuple(h.shape.dim) for h in state.history] == [(3, 4), (5,)] * 2
    model = formats.read_caffemodel(tmp_path / "s_iter_3.caffemodel")
    assert [layer.name for layer in model.layer if len(layer.blobs)] == ["w1", "w2"]


def test_hdf5_state_layout(tmp_path):
    solver = solver_for("AdaDelta", tmp_path / "s", "HDF5")
    solver.step(3)
    with h5py.File(tmp_path / "s_iter_3.solverstate.h5", "r") as h5:
        assert h5["iter"][()].tolist() == [3] and h5["current_step"][()].tolist() == [1]
        assert h5["learned_net"][()].decode() == str(tmp_path / "s_iter_3.caffemodel.h5")
        assert sorted(h5["history"], key=int) == [str(i) for i in range(4)]
        assert h5["history/2"].shape == (3, 4)
    with h5py.File(tmp_path / "s_iter_3.caffemodel.h5", "r") as h5:
        assert h5["data/w1/0"].shape == (3, 4)


def test_snapshot_diff(tmp_path):
    solver = solver_for("SGD", tmp_path / "d", extra="snapshot_diff: true")
    solver.step(3)
    model = formats.read_caffemodel(tmp_path / "d_iter_3.caffemodel")
    w1 = next(layer for layer in model.layer if layer.name == "w1")
    assert len(w1.blobs[0].double_diff) == 12


def test_explicit_snapshot_and_relative_learned_net(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = solver_for("SGD", "rel")
    solver.step(2)
    model, state = solver.snapshot()
    assert (model, state) == ("rel_iter_2.caffemodel", "rel_iter_2.solverstate")
    # Caffe opens learned_net from the cwd; a moved snapshot is also found beside its state.
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in (model, state):
        os.replace(name, moved / name)
    monkeypatch.chdir(moved.parent.parent)
    other = solver_for("SGD", tmp_path / "x")
    other.restore(str(moved / state))
    assert other.iter == 2
    for a, b in zip(weights(other), weights(solver)):
        np.testing.assert_array_equal(a, b)


def test_restore_errors(tmp_path):
    sgd = solver_for("SGD", tmp_path / "sgd")
    sgd.step(3)
    adam = solver_for("Adam", tmp_path / "adam")
    with pytest.raises(SolverError, match="incorrect length of history blobs.*2, this Adam"):
        adam.restore(str(tmp_path / "sgd_iter_3.solverstate"))
    (tmp_path / "sgd_iter_3.caffemodel").unlink()
    with pytest.raises(SolverError, match="sgd_iter_3.caffemodel' was found neither"):
        solver_for("SGD", tmp_path / "b").restore(str(tmp_path / "sgd_iter_3.solverstate"))
    data = (tmp_path / "sgd_iter_3.solverstate").read_bytes()
    (tmp_path / "cut.solverstate").write_bytes(data[:len(data) // 2])
    with pytest.raises(CaffeError):
        solver_for("SGD", tmp_path / "c").restore(str(tmp_path / "cut.solverstate"))
    (tmp_path / "bad.solverstate.h5").write_bytes(b"not hdf5")
    with pytest.raises(SolverError, match="not a readable HDF5 solver state"):
        solver_for("SGD", tmp_path / "c").restore(str(tmp_path / "bad.solverstate.h5"))


# -- crash safety: kill -9 while snapshots are being written --------------------------
BIG_NET = """name: "big"
layer { name: "w" type: "Parameter" top: "w" parameter_param { shape { dim: 200000 } } }
layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 200000 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "w" bottom: "t" top: "loss" }"""

TRAINER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.solvers.nets import make_solver
    solver = make_solver('base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 snapshot: 1 '
                         'snapshot_prefix: "{prefix}"', net={net!r})
    solver.net.blobs["t"].data[...] = 1.0
    print("ready", flush=True)
    solver.step(1000000)
""")


def complete_snapshots(folder):
    """Iterations whose solverstate (and the caffemodel it names) are whole."""
    for path in folder.glob("crash_iter_*.caffemodel"):
        model = formats.read_caffemodel(path)
        values = [len(b.double_data) for layer in model.layer for b in layer.blobs]
        assert values == [200000], f"{path.name} is incomplete"
    done = []
    for path in folder.glob("crash_iter_*.solverstate"):
        state = formats.read_binary_proto(path, caffe_pb2.SolverState())
        assert [len(h.double_data) for h in state.history] == [200000], f"{path.name} is cut"
        assert Path(state.learned_net).exists()
        done.append(state.iter)
    return sorted(done)


def test_kill_9_leaves_only_complete_snapshots(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER.format(root=str(ROOT), prefix=str(tmp_path / "crash"), net=BIG_NET))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready"), proc.stderr.read()
        # Snapshots dominate each iteration, so the kill most likely lands inside one.
        time.sleep(1.0)
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
    done = complete_snapshots(tmp_path)
    assert done, "no snapshot completed in a second"
    # Leftovers of interrupted writes never carry a final name.
    for path in tmp_path.iterdir():
        # crash.lock: the snapshot-prefix lock (issue 20), left by the killed run.
        assert re.fullmatch(r"crash_iter_\d+\.(caffemodel|solverstate)(\..*\.tmp)?"
                            r"|trainer\.py|crash\.lock", path.name), path.name
    # Training resumes from the last complete snapshot.
    last = max(done)
    again = tmp_path / "again"
    solver = make_solver(f'base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 snapshot: 1 '
                         f'snapshot_prefix: "{again}"', net=BIG_NET)
    solver.restore(str(tmp_path / f"crash_iter_{last}.solverstate"))
    assert solver.iter == last
    saved = formats.read_caffemodel(tmp_path / f"crash_iter_{last}.caffemodel")
    np.testing.assert_array_equal(solver.net.params["w"][0].data,
                                  np.array(saved.layer[0].blobs[0].double_data))
    solver.net.blobs["t"].data[...] = 1.0
    solver.step(1)
    assert (tmp_path / f"again_iter_{last + 1}.solverstate").exists()
