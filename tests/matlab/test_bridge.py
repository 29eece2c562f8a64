"""The gateway's Python half, driven as the C gateway drives it (no Octave needed): BVLC's
caffe_ protocol, handles and their checks, errors as identifiers, Ctrl-C between iterations,
the thread-settings check and the command line."""
import subprocess
import sys
import types

import numpy as np
import pytest

import caffe
from caffe.matlab import bridge, startup
from caffe.matlab.__main__ import host_environment

from .nets import DUMMY_NET, dummy_solver


def call(command, *args):
    """dispatch as the gateway calls it; an error answer fails the test with its message."""
    result = bridge.dispatch(command, args)
    assert not (isinstance(result, tuple) and result[0] == "error"), result
    return result


def error_of(command, *args):
    result = bridge.dispatch(command, args)
    assert isinstance(result, tuple) and result[0] == "error", result
    return result[1], result[2]


def single(array):
    """A single array as the gateway passes it: its memory and its MATLAB dims."""
    array = np.asarray(array, dtype=np.float32)
    dims = tuple(reversed(array.shape)) + (1,) * (2 - array.ndim)
    return ("single", memoryview(array.tobytes()), dims)


def handle(answer, n=0):
    tag, ids, key = answer
    assert tag == "handles"
    return ("handle", ids[n], key)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "net.prototxt").write_text(DUMMY_NET)
    (tmp_path / "solver.prototxt").write_text(dummy_solver(tmp_path / "net.prototxt",
                                                           tmp_path / "snap"))
    yield tmp_path
    bridge.dispatch("reset", ())


def test_net_attributes_and_blob_values(files):
    net = handle(call("get_net", str(files / "net.prototxt"), "train"))
    tag, fields = call("net_get_attr", net)
    attr = dict(fields)
    assert attr["layer_names"] == ("cellstr", ["data", "conv", "relu", "ip", "loss"])
    assert attr["blob_names"] == ("cellstr", ["data", "target", "conv", "ip", "loss"])
    assert attr["input_blob_indices"] == ("column", [])
    assert attr["output_blob_indices"] == ("column", [4])
    data = handle(attr["hBlob_blobs"], 0)
    assert call("blob_get_shape", data) == ("row", [5, 5, 3, 8])      # N x C x H x W reversed
    values = np.arange(8 * 3 * 5 * 5, dtype=np.float32).reshape(8, 3, 5, 5)
    assert call("blob_set_data", data, single(values)) is None
    tag, got, dims = call("blob_get_data", data)
    assert dims == (5, 5, 3, 8) and np.array_equal(got.reshape(8, 3, 5, 5), values)
    call("blob_set_diff", data, single(-values))
    assert np.array_equal(call("blob_get_diff", data)[1].reshape(values.shape), -values)
    call("blob_reshape", data, ("double", [6.0, 5.0, 4.0, 3.0, 2.0, 1.0], (1, 6)))
    assert call("blob_get_shape", data) == ("row", [6, 5, 4, 3, 2, 1])
    assert error_of("blob_reshape", data, ("double", [2.5], (1, 1)))[0] == "caffe:usage"
    conv = handle(attr["hLayer_layers"], 1)
    assert call("layer_get_type", conv) == "Convolution"
    params = dict(call("layer_get_attr", conv)[1])["hBlob_blobs"]
    assert call("blob_get_shape", handle(params, 0)) == ("row", [3, 3, 3, 6])
    # the same object keeps its handle number
    assert dict(call("net_get_attr", net)[1])["hBlob_blobs"] == attr["hBlob_blobs"]


def test_errors_come_back_as_identifiers(files):
    assert error_of("nope") == ("caffe:unknownCommand", "Unknown command 'nope'")
    assert error_of("get_net", str(files / "missing"), "test") == \
        ("caffe:fileNotFound", f"Could not open file {files / 'missing'}")
    assert error_of("get_net", str(files / "net.prototxt"))[0] == "caffe:usage"
    (files / "bad.prototxt").write_text('layer { name: "x" type: "Nope" }\n')
    ident, message = error_of("get_net", str(files / "bad.prototxt"), "test")
    assert ident == "caffe:layerSetup" and "layer 'x'" in message
    net = handle(call("get_net", str(files / "net.prototxt"), "test"))
    blob = handle(dict(call("net_get_attr", net)[1])["hBlob_blobs"])
    ident, message = error_of("blob_set_data", blob, single(np.zeros(3)))
    assert ident == "caffe:sizeMismatch" and "(3 vs 600)" in message
    assert error_of("blob_set_data", blob, ("double", [1.0], (1, 1)))[0] == "caffe:usage"
    assert error_of("write_mean", ("single", memoryview(b""), (0, 0, 0, 0)),
                    str(files / "m"))[0] == "caffe:usage"


def test_handles_go_stale(files):
    net = handle(call("get_net", str(files / "net.prototxt"), "train"))
    blob = handle(dict(call("net_get_attr", net)[1])["hBlob_blobs"])
    solver = handle(call("get_solver", str(files / "solver.prototxt")))
    solver_net = handle(dict(call("solver_get_attr", solver)[1])["hNet_net"])
    call("delete_net", solver_net)          # a solver's net belongs to the solver: kept
    assert call("net_forward", solver_net) is None
    assert error_of("net_forward", blob) == ("caffe:invalidHandle",
                                             "expected a Net handle, got a Blob handle")
    call("delete_net", net)
    ident, message = error_of("blob_get_data", blob)
    assert ident == "caffe:invalidHandle" and "deleted" in message
    assert call("reset") == ("print", "Cleared 1 solvers and 0 stand-alone nets\n")
    for command, h in (("solver_get_iter", solver), ("net_forward", solver_net)):
        ident, message = error_of(command, h)
        assert ident == "caffe:invalidHandle" and "caffe.reset_all()" in message
    assert error_of("blob_get_data", ("other", "struct"))[0] == "caffe:usage"
    assert error_of("blob_get_data", ("handle", 10 ** 6, call("get_init_key")))[0] == \
        "caffe:invalidHandle"


def test_solver_steps_snapshot_restore(files):
    solver = handle(call("get_solver", str(files / "solver.prototxt")))
    call("solver_step", solver, ("double", [3.0], (1, 1)))
    assert call("solver_get_iter", solver) == 3.0
    assert call("solver_get_max_iter", solver) == 100000.0
    call("solver_snapshot", solver)
    call("solver_step", solver, ("double", [2.0], (1, 1)))
    call("solver_restore", solver, str(files / "snap_iter_3.solverstate"))
    assert call("solver_get_iter", solver) == 3.0


def test_ctrl_c_stops_between_iterations(files, monkeypatch):
    presses = iter([False, False, True])
    monkeypatch.setitem(sys.modules, "_matcaffe",
                        types.SimpleNamespace(take_interrupt=lambda: next(presses, False)))
    solver = handle(call("get_solver", str(files / "solver.prototxt")))
    ident, message = error_of("solver_step", solver, ("double", [50.0], (1, 1)))
    assert ident == "caffe:interrupted" and "at iteration 3" in message
    call("solver_step", solver, ("double", [2.0], (1, 1)))     # and it goes on
    assert call("solver_get_iter", solver) == 5.0


def test_mean_files(files):
    mean = np.random.default_rng(0).random((3, 4, 6), dtype=np.float32)   # C x H x W
    call("write_mean", single(mean), str(files / "mean.binaryproto"))
    tag, got, dims = call("read_mean", str(files / "mean.binaryproto"))
    assert dims == (6, 4, 3, 1) and np.array_equal(got.reshape(mean.shape), mean)
    blob = caffe.io.caffe_pb2.BlobProto()
    blob.ParseFromString((files / "mean.binaryproto").read_bytes())
    assert list(blob.shape.dim) == [1, 3, 4, 6]
    assert call("version") == "1.0.0"


def test_thread_warning():
    gomp = {"libgomp.so.1", "libc.so.6"}
    assert startup.thread_warning({"PATH": "/bin"}, gomp).startswith("the host loaded OpenMP")
    assert startup.thread_warning({"OMP_WAIT_POLICY": "passive"}, gomp) is None
    assert startup.thread_warning({}, {"libc.so.6"}) is None     # torch brings its own
    assert startup.thread_warning(None, gomp) is None            # no /proc: nothing known
    env = startup.initial_environment()
    assert env is None or "PATH" in env


def test_host_environment_keeps_the_users_choices(tmp_path):
    env = host_environment(tmp_path, {"OCTAVE_PATH": "/mine", "OMP_NUM_THREADS": "3"})
    assert env["OCTAVE_PATH"].split(":") == [str(tmp_path), "/mine"]
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["OMP_NUM_THREADS"] == "3"
    assert host_environment(tmp_path, {"OMP_WAIT_POLICY": "ACTIVE"}, host="matlab")[
        "OMP_WAIT_POLICY"] == "ACTIVE"
    assert "MATLABPATH" in host_environment(tmp_path, {}, host="matlab")


def test_command_line_errors_are_clear(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "caffe.matlab", *args],
                              capture_output=True, text=True)
    empty = run("path", "--out", str(tmp_path))
    assert empty.returncode == 1 and "no gateway built in" in empty.stderr
    assert "Traceback" not in empty.stderr
    matlab = run("build", "--matlab", str(tmp_path / "nomatlab"), "--out", str(tmp_path / "o"))
    assert matlab.returncode == 1 and "no MATLAB mex compiler" in matlab.stderr
    assert "Traceback" not in matlab.stderr


def test_the_m_files_and_the_gateway_ship_in_the_wheel():
    import fnmatch
    import tomllib
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["caffe.matlab"]
    folder = root / "caffe" / "matlab"
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*")
             if p.is_file() and p.suffix in (".m", ".c")]
    assert "+caffe/Net.m" in files and "caffe_.c" in files
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert not unshipped


def test_blob_values_cross_on_every_device(files, device):
    # On a GPU the blob's NumPy face is a host mirror: set_data must reach the tensor, get_data
    # must see what the forward computed there.
    from caffe import common
    model = files / "input.prototxt"
    # an Input layer: DummyData would refill the data blob in the forward
    model.write_text(DUMMY_NET.replace('type: "DummyData"', 'type: "Input"').replace(
        "dummy_data_param", "input_param").replace(
        'data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: -1 max: 1 }',
        ""))
    (common.set_mode_gpu if device == "cuda" else common.set_mode_cpu)()
    try:
        net = handle(call("get_net", str(model), "test"))
        attr = dict(call("net_get_attr", net)[1])
        names = attr["blob_names"][1]
        data = handle(attr["hBlob_blobs"], names.index("data"))
        ip = handle(attr["hBlob_blobs"], names.index("ip"))
        values = np.random.default_rng(3).standard_normal((8, 3, 5, 5)).astype(np.float32)
        call("blob_set_data", data, single(values))
        call("net_forward", net)
        got = call("blob_get_data", ip)[1].reshape(8, 4)
        core = bridge.TABLE.get(net, "Net")
        assert core.device.type == device
        cpu = caffe.Net(str(model), caffe.TEST, device="cpu")
        for name in ("conv", "ip"):
            for mine, theirs in zip(cpu.params[name], core.params[name]):
                mine.data[...] = theirs.data
        cpu.blobs["data"].data[...] = values
        assert np.allclose(cpu.forward(end="ip")["ip"], got, atol=1e-5)
    finally:
        common.set_mode_cpu()
