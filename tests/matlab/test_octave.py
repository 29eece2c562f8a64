"""matcaffe in GNU Octave: its API over pycaffe, numbers equal to pycaffe's, its errors, stale
handles, Ctrl-C, the thread settings and BVLC matcaffe's own test flows (caffe.run_tests)."""
import re
import signal
import subprocess
import time

import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2

from .nets import DUMMY_NET, dummy_solver, lenet_deploy
from .octave import octave_command, host_env, ok, run_octave


def test_matcaffe_own_test_flows(matcaffe, tmp_path):
    # BVLC's test_net / test_solver / test_io flows (caffe.test.*), run by caffe.run_tests.
    out = ok(run_octave(matcaffe, "results = caffe.run_tests();\n"
                        "printf('%s=%d\\n', [{results.Name}; num2cell([results.Passed])]{:});\n",
                        tmp_path))
    names = dict(re.findall(r"^(test_\w+/\w+)=(\d)$", out, re.M))
    assert set(names) == {"test_net/blob", "test_net/layer", "test_net/forward_backward",
                          "test_net/inputs_outputs", "test_net/save_and_read",
                          "test_solver/solve", "test_solver/snapshot_restore",
                          "test_io/read_write_mean"}, out
    assert set(names.values()) == {"1"}, out
    assert "8 passed, 0 failed" in out


def test_forward_backward_and_params_equal_pycaffe(matcaffe, tmp_path):
    model = tmp_path / "lenet.prototxt"
    model.write_text(lenet_deploy(batch=4))
    caffe.set_random_seed(3)
    net = caffe.Net(str(model), caffe.TEST)
    weights = tmp_path / "lenet.caffemodel"
    net.save(str(weights))
    rng = np.random.default_rng(0)
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    top_diff = rng.standard_normal((4, 10)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    top_diff.tofile(tmp_path / "top_diff.bin")
    script = """
    net = caffe.Net('lenet.prototxt', 'lenet.caffemodel', 'test');
    read = @(f, dims) reshape(fread(fopen(f), inf, 'single=>single'), dims);
    x = read('x.bin', [28 28 1 4]);      % N x C x H x W in C order is W x H x C x N here
    out = net.forward({x});
    d = net.backward({read('top_diff.bin', [10 4])});
    save_bin = @(f, a) fclose(fopen(f, 'w')) * 0 + fwrite(fopen(f, 'w'), a, 'single');
    names = {'prob', 'data_diff', 'conv1_w', 'conv1_w_diff', 'ip2_b'};
    values = {out{1}, d{1}, net.params('conv1', 1).get_data(), ...
              net.params('conv1', 1).get_diff(), net.layers('ip2').params(2).get_data()};
    for n = 1:numel(names)
      fid = fopen([names{n} '.out'], 'w'); fwrite(fid, values{n}, 'single'); fclose(fid);
      printf('%s size %s\\n', names{n}, mat2str(size(values{n})));
    end
    printf('inputs %s outputs %s\\n', strjoin(net.inputs', ','), strjoin(net.outputs', ','));
    printf('layers %s\\n', strjoin(net.layer_names', ','));
    printf('blobs %d first %s index %d layer_index %d type %s\\n', numel(net.blob_vec), ...
           net.blob_names{1}, net.name2blob_index('ip1'), net.name2layer_index('conv2'), ...
           net.layer_vec(2).type());
    % a new batch size: reshape the input, then the net
    net.blobs('data').reshape([28 28 1 2]);
    net.reshape();
    printf('reshaped %s\\n', mat2str(net.blobs('prob').shape));
    """
    # One thread, as this test process runs torch (tests/conftest.py): a weight gradient's
    # sum is then taken in the same order on both sides.
    out = ok(run_octave(matcaffe, script, tmp_path, OMP_NUM_THREADS="1"))
    assert "prob size [10 4]" in out and "data_diff size [28 28 1 4]" in out
    assert "conv1_w size [5 5 1 20]" in out
    assert "inputs data outputs prob" in out
    assert "layers data,conv1,pool1,conv2,pool2,ip1,relu1,ip2,prob" in out
    assert "blobs 8 first data index 6 layer_index 4 type Convolution" in out
    assert "reshaped [10 2]" in out

    net.blobs["data"].data[...] = x
    net.forward()
    net.blobs["prob"].diff[...] = top_diff
    net.backward()

    def got(name, shape):
        return np.fromfile(tmp_path / f"{name}.out", dtype=np.float32).reshape(shape)
    # Bit for bit: the same pycaffe computes in both, with torch's own BLAS in Octave too.
    assert np.array_equal(got("prob", (4, 10)), net.blobs["prob"].data)
    assert np.array_equal(got("data_diff", (4, 1, 28, 28)), net.blobs["data"].diff)
    assert np.array_equal(got("conv1_w", (20, 1, 5, 5)), net.params["conv1"][0].data)
    assert np.array_equal(got("conv1_w_diff", (20, 1, 5, 5)), net.params["conv1"][0].diff)
    assert np.array_equal(got("ip2_b", (10,)), net.params["ip2"][1].data)


def test_solver_weights_after_steps_equal_pycaffe(matcaffe, tmp_path):
    (tmp_path / "net.prototxt").write_text(DUMMY_NET)
    (tmp_path / "solver.prototxt").write_text(dummy_solver(tmp_path / "net.prototxt",
                                                           tmp_path / "snap"))
    out = ok(run_octave(matcaffe, """
    solver = caffe.get_solver('solver.prototxt');
    solver.step(2); solver.step(5);
    printf('iter %d\\n', solver.iter());
    solver.net.save('octave.caffemodel');
    """, tmp_path, OMP_NUM_THREADS="1"))       # one thread, as here: the same sums
    assert "iter 7" in out
    solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    solver.step(7)
    ours = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN,
                     weights=str(tmp_path / "octave.caffemodel"))
    for name in ("conv", "ip"):
        for mine, theirs in zip(ours.params[name], solver.net.params[name]):
            assert np.array_equal(mine.data, theirs.data), name
    assert not np.array_equal(ours.params["ip"][0].data,
                              caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN)
                              .params["ip"][0].data)


def test_io_against_pycaffe(matcaffe, tmp_path):
    from PIL import Image
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)      # H x W x RGB
    Image.fromarray(rgb).save(tmp_path / "im.png")
    mean = rng.random((3, 4, 6), dtype=np.float32) * 255        # C x H x W
    (tmp_path / "mean.binaryproto").write_bytes(
        caffe.io.array_to_blobproto(mean[None]).SerializeToString())
    out = ok(run_octave(matcaffe, """
    im = caffe.io.load_image('im.png');
    printf('image %s %s\\n', class(im), mat2str(size(im)));
    fid = fopen('im.out', 'w'); fwrite(fid, im, 'single'); fclose(fid);
    m = caffe.io.read_mean('mean.binaryproto');
    printf('mean %s\\n', mat2str(size(m)));
    fid = fopen('mean.out', 'w'); fwrite(fid, m, 'single'); fclose(fid);
    caffe.io.write_mean(m(:, :, 1), 'gray.binaryproto');
    printf('version %s\\n', caffe.version());
    caffe.set_mode_gpu(); caffe.set_device(0); caffe.set_mode_cpu();
    """, tmp_path))
    assert "image single [7 5 3]" in out and "mean [6 4 3]" in out
    assert "version 1.0.0" in out
    im = np.fromfile(tmp_path / "im.out", dtype=np.float32).reshape(3, 5, 7)   # C x H x W
    assert np.array_equal(im, rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32))
    assert np.array_equal(np.fromfile(tmp_path / "mean.out", np.float32).reshape(3, 4, 6), mean)
    gray = caffe_pb2.BlobProto()
    gray.ParseFromString((tmp_path / "gray.binaryproto").read_bytes())
    assert np.array_equal(caffe.io.blobproto_to_array(gray), mean[None, :1])


ERRORS = """
1;  % a script, not a function file: it defines report() first
function report(f)
  try
    f();
    printf('no error\\n');
  catch err
    printf('%s | %s\\n', err.identifier, strrep(err.message, sprintf('\\n'), ' '));
  end
end
report(@() caffe.Net('missing.prototxt', 'test'));
report(@() caffe.Net('bad.prototxt', 'test'));
report(@() caffe.Net('unknown.prototxt', 'test'));
report(@() caffe.Net('net.prototxt', 'validate'));
report(@() caffe.get_solver('badsolver.prototxt'));
net = caffe.Net('net.prototxt', 'train');
report(@() net.blobs('nope'));
report(@() net.blobs('data').set_data(zeros(3, 3)));
report(@() net.copy_from('other.caffemodel'));
report(@() caffe_('no_such_command'));
report(@() caffe_('blob_get_data', 3));
report(@() caffe_('net_forward', net.blobs('data')));
forged = struct('ptr', uint64(987654), 'init_key', caffe_('get_init_key'));
report(@() caffe_('blob_get_data', forged));
h = caffe_('get_net', 'net.prototxt', 'train');
report(@() caffe_('blob_get_data', h));
% stale handles: a blob of a deleted net, then everything after reset_all
net2 = caffe.Net('net.prototxt', 'train');
blob2 = net2.blobs('data');
delete(net2);
report(@() blob2.get_data());
blob = net.blobs('data');
solver = caffe.Solver('solver.prototxt');
caffe.reset_all();
report(@() blob.get_data());
report(@() net.forward_prefilled());
report(@() solver.iter());
report(@() solver.net.blobs('data').shape);
net = caffe.Net('net.prototxt', 'train');
printf('after reset: %s\\n', mat2str(net.blobs('data').shape));
% BVLC's handles, as its +caffe/private/is_valid_handle.m checks them
h = caffe_('get_net', 'net.prototxt', 'test');
key = caffe_('get_init_key');
printf('bvlc handle %d %d\\n', isa(h.ptr, 'uint64') && isscalar(h.ptr), ...
       isa(h.init_key, 'double') && h.init_key == key);
caffe_('reset');
printf('new key %d\\n', caffe_('get_init_key') ~= key);
"""


def test_error_identifiers_and_stale_handles(matcaffe, tmp_path):
    (tmp_path / "net.prototxt").write_text(DUMMY_NET)
    (tmp_path / "solver.prototxt").write_text(dummy_solver(tmp_path / "net.prototxt",
                                                           tmp_path / "snap"))
    (tmp_path / "bad.prototxt").write_text('layer { name: "x" type: "Input" top: "x"\n')
    (tmp_path / "unknown.prototxt").write_text('layer { name: "odd" type: "Convolutoin" }\n')
    (tmp_path / "badsolver.prototxt").write_text('net: "net.prototxt" type: "SDG"\n')
    other = tmp_path / "other.prototxt"
    other.write_text(DUMMY_NET.replace("num_output: 6", "num_output: 5"))
    caffe.Net(str(other), caffe.TRAIN).save(str(tmp_path / "other.caffemodel"))
    out = ok(run_octave(matcaffe, ERRORS, tmp_path, name="errors.m"))
    lines = [line for line in out.splitlines() if " | " in line or line.startswith("after")]
    expected = [
        ("caffe:fileNotFound", "missing.prototxt"),
        ("caffe:proto", "bad.prototxt line 1: Expected \"}\""),
        ("caffe:layerSetup", "layer 'odd': unknown layer type 'Convolutoin'; did you mean "
                             "'Convolution'"),
        ("caffe:invalidArgument", "phase_name can only be 'train' or 'test'"),
        ("caffe:solver", "unknown solver type 'SDG'"),
        ("caffe:unknownName", "no blob named 'nope'"),
        ("caffe:sizeMismatch", "[3 3 1 1] vs [5 5 3 8]"),
        ("caffe:weights", "conv"),
        ("caffe:unknownCommand", "Unknown command 'no_such_command'"),
        ("caffe:usage", "Usage: caffe_('blob_get_data', hBlob)"),
        ("caffe:usage", "Usage: caffe_('net_forward', hNet)"),
        ("caffe:invalidHandle", "deleted"),
        ("caffe:invalidHandle", "expected a Blob handle, got a Net handle"),
        ("caffe:invalidHandle", "deleted"),
        ("caffe:invalidHandle", "stale"),
        ("caffe:invalidHandle", "stale"),
        ("caffe:invalidHandle", "stale"),
        ("caffe:invalidHandle", "stale"),
    ]
    assert len(lines) == len(expected) + 1, out
    for line, (identifier, text) in zip(lines, expected):
        assert line.startswith(identifier + " | ") and text in line, (line, identifier, out)
    assert lines[-1] == "after reset: [5 5 3 8]"
    assert "bvlc handle 1 1" in out and "new key 1" in out


CTRL_C = """
solver = caffe.Solver('solver.prototxt');
try
  solver.solve();
  printf('solve finished\\n');
catch err
  printf('caught %s: %s\\n', err.identifier, err.message);
end
before = solver.iter();
solver.step(3);
printf('iter %d then %d of %d\\n', before, solver.iter(), solver.max_iter());
"""


def test_ctrl_c_interrupts_solve_and_the_solver_goes_on(matcaffe, tmp_path):
    (tmp_path / "net.prototxt").write_text(DUMMY_NET)
    (tmp_path / "solver.prototxt").write_text(dummy_solver(tmp_path / "net.prototxt",
                                                           tmp_path / "snap", display=5))
    (tmp_path / "ctrl_c.m").write_text(CTRL_C)
    proc = subprocess.Popen(octave_command(tmp_path / "ctrl_c.m"), cwd=tmp_path,
                            env=host_env(matcaffe), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        # Wait until the solver logs its progress: solve() is running, Ctrl-C is ours.
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            if "Iteration 10" in line or not line:
                break
        assert any("Iteration 10" in s for s in seen), "".join(seen)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    caught = re.search(r"caught caffe:interrupted: .*interrupted \(Ctrl-C\) at iteration (\d+)",
                       out)
    assert caught, out + err
    stopped = int(caught.group(1))
    assert 10 <= stopped < 100000
    assert f"iter {stopped} then {stopped + 3} of 100000" in out


def test_thread_settings(matcaffe, tmp_path):
    script = """
    policy = getenv('OMP_WAIT_POLICY');       % as Octave started (before pycaffe sets its own)
    v = caffe.version();
    [msg, id] = lastwarn();
    printf('policy [%s] warning [%s]\\n', policy, id);
    """
    # As the launcher starts Octave: passive OpenMP threads, no warning.
    out = ok(run_octave(matcaffe, script, tmp_path))
    assert "policy [PASSIVE] warning []" in out
    # Started without: Octave's libgomp spins, and the gateway says so once.
    done = run_octave(matcaffe, script, tmp_path, passive=False)
    assert "policy [] warning [caffe:threads]" in ok(done)
    assert "OMP_WAIT_POLICY=PASSIVE" in done.stderr


def test_launcher_starts_octave_with_matcaffe(matcaffe, tmp_path):
    env = host_env(matcaffe, PYCAFFE_MATLAB_DIR=str(matcaffe))
    for name in ("OCTAVE_PATH", "OMP_WAIT_POLICY", "CAFFE_THREADS_CHOSEN"):
        env.pop(name, None)
    import sys
    done = subprocess.run([sys.executable, "-m", "caffe.matlab", "octave", "--no-gui", "-q",
                           "--norc", "--eval",
                           "printf('%s %s\\n', caffe.version(), getenv('OMP_WAIT_POLICY'))"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1.0.0 PASSIVE" in done.stdout
    assert "caffe:threads" not in done.stderr


def test_data_layers_in_the_host(matcaffe, tmp_path):
    # Inside Octave every extension module loads with RTLD_DEEPBIND (caffe/matlab/startup.py):
    # LMDB Data and ImageData (Pillow's decoders) still read what pycaffe reads.
    import lmdb
    from PIL import Image
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (3, 6, 5, 3), dtype=np.uint8)        # N x H x W x RGB
    with lmdb.open(str(tmp_path / "db"), map_size=1 << 24) as env, env.begin(write=True) as txn:
        for i, im in enumerate(images):
            datum = caffe.io.array_to_datum(im.transpose(2, 0, 1), label=i)
            txn.put(f"{i:08d}".encode(), datum.SerializeToString())
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"im{i}.png")
    (tmp_path / "list.txt").write_text("".join(f"im{i}.png {i}\n" for i in range(3)))
    (tmp_path / "data.prototxt").write_text(f"""
layer {{ name: "db" type: "Data" top: "db" top: "db_label"
  data_param {{ source: "{tmp_path / 'db'}" backend: LMDB batch_size: 3 }} }}
layer {{ name: "img" type: "ImageData" top: "img" top: "img_label"
  image_data_param {{ source: "{tmp_path / 'list.txt'}" root_folder: "{tmp_path}/"
                      batch_size: 3 }} }}
""")
    out = ok(run_octave(matcaffe, """
    net = caffe.Net('data.prototxt', 'test');
    net.forward_prefilled();
    names = {'db', 'db_label', 'img', 'img_label'};
    for n = 1:numel(names)
      fid = fopen([names{n} '.out'], 'w');
      fwrite(fid, net.blobs(names{n}).get_data(), 'single');
      fclose(fid);
    end
    printf('shape %s\\n', mat2str(net.blobs('img').shape));
    """, tmp_path))
    assert "shape [5 6 3 3]" in out
    python = caffe.Net(str(tmp_path / "data.prototxt"), caffe.TEST)
    python.forward()
    for name in ("db", "db_label", "img", "img_label"):
        got = np.fromfile(tmp_path / f"{name}.out", np.float32)
        assert np.array_equal(got, python.blobs[name].data.ravel()), name
    # Caffe's BGR channel order, from both sources
    assert np.array_equal(python.blobs["img"].data, images[:, :, :, ::-1].transpose(0, 3, 1, 2))


def test_gateway_survives_clear_and_reports_a_python_without_pycaffe(matcaffe, tmp_path):
    # `clear all` cannot unload the gateway (CPython cannot start twice in one process).
    out = ok(run_octave(matcaffe, """
    setenv('KEY_BEFORE', num2str(caffe_('get_init_key'), 17));
    clear all; clear functions; clear caffe_;
    printf('same session %d\\n', caffe_('get_init_key') == str2double(getenv('KEY_BEFORE')));
    """, tmp_path))
    assert "same session 1" in out
    # A Python without pycaffe's dependencies: a clear error on every call, never a crash.
    import venv
    venv.create(tmp_path / "bare", with_pip=False)
    done = run_octave(matcaffe, """
    for n = 1:2
      try
        caffe.version();
      catch err
        printf('%s | %s\\n', err.identifier, err.message);
      end
    end
    """, tmp_path, PYCAFFE_PYTHON=str(tmp_path / "bare" / "bin" / "python"))
    lines = [line for line in ok(done).splitlines() if " | " in line]
    assert len(lines) == 2 and lines[0] == lines[1], done.stdout + done.stderr
    assert lines[0].startswith("caffe:init | ") and "could not import pycaffe" in lines[0]
    assert "No module named" in lines[0]


def test_benchmark_runs(matcaffe):
    # benchmarks/bench_matcaffe.py, briefly: its rows come out (the timings are not checked)
    import sys
    from .octave import ROOT
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_matcaffe", "--repeat", "3",
                           "--matcaffe", str(matcaffe)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("round trip", "200 KB blob: Blob.set_data", "LeNet forward b64: net.forward"):
        line = next(s for s in done.stdout.splitlines() if s.startswith(row))
        assert len(re.findall(r"[0-9.]+ [um]s", line)) == 2, line
