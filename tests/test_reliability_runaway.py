"""Issue 26, items 11-14: runaway arithmetic, a full log disk, data that allocates without
bound, and one Net used from several threads. Each attack runs as tests/test_reliability.py's
do: in a child under `timeout` and 1 GiB of address space beyond its imports
(tests/reliability_attack.py), and must end in a CaffeError naming its place.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from caffe.data.db import array_to_datum, open_db

from .reliability_attack import ROOT, attack, check_all

SOLVER_NET = """
layer { name: "d" type: "DummyData" top: "x" top: "y" dummy_data_param {
  shape { dim: 2 dim: 3 } shape { dim: 2 }
  data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "z"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "y" top: "loss" }
"""


def _solver(folder, name, extra, max_iter=3):
    (folder / "net.prototxt").write_text(SOLVER_NET)
    # Frozen weights: a rate growing toward overflow does not first blow up the loss.
    (folder / "frozen.prototxt").write_text(SOLVER_NET.replace(
        'bottom: "x" top: "z"', 'bottom: "x" top: "z" param { lr_mult: 0 } param { lr_mult: 0 }'))
    (folder / name).write_text(f'net: "net.prototxt" base_lr: 0.01 max_iter: {max_iter} '
                               f'display: 0 random_seed: 1 {extra}')


# -- 11. Learning rates computed as C does; solver states and fields checked --------------
def test_lr_policies_follow_c_arithmetic():
    from caffe.proto import caffe_pb2
    from caffe.solvers.lr_policy import learning_rate

    def rate(it, **fields):
        return learning_rate(caffe_pb2.SolverParameter(base_lr=0.5, **fields), it, 0)[0]
    # The sigmoid far from its step: 0 before, base_lr after (exp overflows to inf in C).
    assert rate(0, lr_policy="sigmoid", gamma=1e6, stepsize=10) == 0.0
    assert rate(20, lr_policy="sigmoid", gamma=1e6, stepsize=10) == 0.5
    assert rate(5, lr_policy="sigmoid", gamma=0.1, stepsize=10) == \
        pytest.approx(0.5 / (1 + np.exp(0.5)), rel=1e-6)
    assert rate(10 ** 6, lr_policy="exp", gamma=2.0) == float("inf")
    assert rate(10 ** 6, lr_policy="exp", gamma=0.5) == 0.0
    assert rate(100, lr_policy="step", gamma=1e30, stepsize=1) == float("inf")
    # poly past max_iter: C's pow of a negative base to a fractional power is nan, not the
    # complex number Python gives; 0 to a negative power is inf, not ZeroDivisionError.
    assert np.isnan(rate(20, lr_policy="poly", power=0.5, max_iter=10))
    assert rate(10, lr_policy="poly", power=-1.0, max_iter=10) == float("inf")
    assert rate(20, lr_policy="poly", power=2.0, max_iter=10) == pytest.approx(0.5)
    assert np.isnan(rate(2, lr_policy="inv", gamma=-1.0, power=0.5))


def test_solver_overflows_and_states(tmp_path):
    for name, extra in (
            ("sigmoid.prototxt", 'lr_policy: "sigmoid" gamma: 1000 stepsize: 2'),
            ("exp.prototxt", 'lr_policy: "exp" gamma: 1e30'),
            ("step.prototxt", 'lr_policy: "step" gamma: 1e38 stepsize: 1'),
            ("poly.prototxt", 'lr_policy: "poly" power: -1'),
            ("fixed.prototxt", 'lr_policy: "fixed"'),
            ("adam.prototxt", 'lr_policy: "fixed" type: "Adam" momentum: 1'),
            ("adam2.prototxt", 'lr_policy: "fixed" type: "Adam" momentum2: 1.5'),
            ("nul.prototxt", 'lr_policy: "fixed" snapshot: 1 snapshot_prefix: "snap/a\\000b"'),
            ("nulnet.prototxt", 'lr_policy: "fixed" test_net: "n\\000et" test_iter: 1')):
        _solver(tmp_path, name, extra, max_iter={"poly.prototxt": 2, "exp.prototxt": 20,
                                                 "step.prototxt": 20}.get(name, 3))
        if name in ("exp.prototxt", "step.prototxt"):
            text = (tmp_path / name).read_text()
            (tmp_path / name).write_text(text.replace('"net.prototxt"', '"frozen.prototxt"'))
    (tmp_path / "snap").mkdir()
    results, out, _ = attack("""
        import h5py, numpy as np
        from caffe.proto import caffe_pb2
        from caffe import formats
        solver = caffe.SGDSolver("sigmoid.prototxt")
        solver.solve()
        print("SIGMOID", solver.iter, solver.learning_rate, flush=True)
        expect("exp", lambda: caffe.get_solver("exp.prototxt").solve(), "Iteration 11",
               "lr_policy 'exp'", "gamma 1e+30", "inf")
        expect("step", lambda: caffe.get_solver("step.prototxt").solve(), "Iteration 9",
               "lr_policy 'step'", "inf")
        # poly reaches 0 ** -1 only at iter == max_iter: solve() stops before, lr says inf.
        solver = caffe.get_solver("poly.prototxt")
        solver.solve()
        print("POLY", solver.lr, flush=True)
        expect("adam", lambda: caffe.get_solver("adam.prototxt").solve(), "Iteration 0",
               "Adam bias correction", "momentum 1")
        expect("adam2", lambda: caffe.get_solver("adam2.prototxt").solve(), "Iteration 0",
               "momentum2 1.5", "nan")
        expect("nul", lambda: caffe.get_solver("nul.prototxt"), "snapshot_prefix",
               "NUL")
        expect("nul test_net", lambda: caffe.get_solver("nulnet.prototxt"), "test_net",
               "NUL")
        # Solver states whose counters a solver never writes.
        solver = caffe.get_solver("fixed.prototxt")
        solver.param.snapshot_prefix = "snap/s"
        solver.step(1)
        model, state = solver.snapshot()
        for label, field, value in (("negative iter", "iter", -2 ** 31),
                                    ("negative step", "current_step", -3)):
            proto = formats.read_binary_proto(state, caffe_pb2.SolverState())
            setattr(proto, field, value)
            open(f"{field}.solverstate", "wb").write(proto.SerializeToString())
            expect(label, lambda: caffe.get_solver("fixed.prototxt").restore(
                f"{field}.solverstate"), f"{field}.solverstate", f"field '{field}'",
                str(value))
        solver.param.snapshot_format = caffe_pb2.SolverParameter.HDF5
        model, state = solver.snapshot()
        for label, value in (("hdf5 nan iter", np.nan), ("hdf5 huge iter", 2.0 ** 40),
                             ("hdf5 negative iter", -5)):
            name = label.replace(" ", "_") + ".solverstate.h5"
            with open(state, "rb") as f, open(name, "wb") as g:
                g.write(f.read())
            with h5py.File(name, "r+") as h5:
                del h5["iter"]
                h5["iter"] = np.array([value], "f8")
            expect(label, lambda: caffe.get_solver("fixed.prototxt").restore(name), name,
                   "'iter'")
        # The checks leave the solver as it was: a good state still restores and trains.
        solver = caffe.get_solver("fixed.prototxt")
        solver.restore(state)
        solver.step(1)
        print("RESUMED", solver.iter, flush=True)
    """, tmp_path, seconds=120)
    check_all(results, ["exp", "step", "adam", "adam2", "nul", "nul test_net",
                        "negative iter", "negative step", "hdf5 nan iter", "hdf5 huge iter",
                        "hdf5 negative iter"])
    assert "SIGMOID 3 0.0" in out, out
    assert "POLY inf" in out, out
    assert "RESUMED 2" in out, out


# -- 12. A full disk under -log_dir does not change the run's outcome --------------------
def test_full_log_disk_leaves_training_alone(tmp_path):
    _solver(tmp_path, "solver.prototxt", 'lr_policy: "fixed" display: 1 snapshot: 100 '
            'snapshot_prefix: "snap/s"', max_iter=200)
    (tmp_path / "solver.prototxt").write_text(
        (tmp_path / "solver.prototxt").read_text().replace("display: 0", ""))
    (tmp_path / "snap").mkdir()
    _, out, err = attack("""
        import signal
        from caffe.tools import caffe as cli
        # A disk that fills up: every write past 3000 bytes of a file fails as ENOSPC would
        # (EFBIG). The text log and the tables pass it within the run; snapshots stay small.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))
        print("RC", cli.main(["train", "-solver", "solver.prototxt", "-log_dir", "logs"]),
              flush=True)
        print("RC", cli.main(["train", "-solver", "solver.prototxt", "-log_dir",
                              "/dev/null/logs"]), flush=True)
    """, tmp_path, seconds=120)
    assert out.count("RC 0") == 2, (out, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    assert err.count("Cannot write the log file") == 1, err[-3000:]
    assert err.count("Cannot write the training log in logs") == 1, err[-3000:]
    assert "Cannot create the log file" in err and "in /dev/null/logs" in err, err[-3000:]
    assert "Cannot create the training log in /dev/null/logs" in err, err[-3000:]
    assert err.count("Optimization Done.") == 4, err[-3000:]
    snaps = sorted(os.listdir(tmp_path / "snap"))
    assert "s_iter_200.caffemodel" in snaps and "s_iter_200.solverstate" in snaps, snaps
    logs = os.listdir(tmp_path / "logs")
    assert not [n for n in logs if n.endswith(".tmp")], logs
    text = [n for n in logs if ".log.INFO." in n]
    assert text and os.path.getsize(tmp_path / "logs" / text[0]) > 0, logs
