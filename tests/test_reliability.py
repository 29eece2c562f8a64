"""The attacks of issue 20, each run under `timeout` and a 1 GiB address-space limit on top of
what the child holds after importing torch and caffe (tests/reliability_attack.py).

Every attack must end in a CaffeError naming its place (file, layer, record, line or blob),
never hang, exhaust memory or leak a library's exception. One test per point of the issue.
"""
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from caffe.data.db import array_to_datum, open_db

from .reliability_attack import ROOT, attack, check_all

DATA_NET = """
layer {{ name: "data" type: "Data" top: "data" top: "label"
        data_param {{ source: "{source}" backend: {backend} batch_size: 2 }} }}
"""


def _write_db(path, backend, records=4):
    with open_db(str(path), backend, "new") as db:
        for i in range(records):
            db.put(f"{i:08d}", array_to_datum(np.full((1, 2, 2), i, np.uint8), i)
                   .SerializeToString())


# -- 1. FIFOs inside database folders ----------------------------------------------------
def test_fifo_inside_database_folders(tmp_path):
    lmdb_dir, leveldb_dir, log_dir = tmp_path / "a_lmdb", tmp_path / "b_leveldb", \
        tmp_path / "c_leveldb"
    lmdb_dir.mkdir()
    os.mkfifo(lmdb_dir / "data.mdb")
    leveldb_dir.mkdir()
    os.mkfifo(leveldb_dir / "CURRENT")
    _write_db(log_dir, "leveldb")
    os.unlink(log_dir / "LOG")
    os.mkfifo(log_dir / "LOG")              # LevelDB opens LOG for writing: would block
    for name, folder, backend in (("lmdb", lmdb_dir, "LMDB"), ("leveldb", leveldb_dir, "LEVELDB"),
                                  ("log", log_dir, "LEVELDB")):
        (tmp_path / f"{name}.prototxt").write_text(DATA_NET.format(source=folder,
                                                                   backend=backend))
    results, _, _ = attack("""
        from caffe.tools.compute_image_mean import compute_mean
        expect("net lmdb", lambda: caffe.Net("lmdb.prototxt", caffe.TEST), "a_lmdb/data.mdb",
               "not a regular file", "layer 'data'")
        expect("mean lmdb", lambda: compute_mean("a_lmdb", "lmdb"), "a_lmdb/data.mdb")
        expect("net leveldb", lambda: caffe.Net("leveldb.prototxt", caffe.TEST),
               "b_leveldb/CURRENT", "not a regular file")
        expect("mean leveldb", lambda: compute_mean("b_leveldb", "leveldb"), "b_leveldb/CURRENT")
        expect("net leveldb LOG", lambda: caffe.Net("log.prototxt", caffe.TEST), "c_leveldb/LOG")
    """, tmp_path, seconds=90)
    check_all(results, ["net lmdb", "mean lmdb", "net leveldb", "mean leveldb",
                        "net leveldb LOG"])


# -- 2. HDF5 external storage and external links -----------------------------------------
IP_NET = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 25 } }
"""


def _weights(path, make):
    with h5py.File(path, "w") as f:
        make(f.create_group("data").create_group("ip"))


def test_hdf5_external_storage_and_links(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "ip.prototxt").write_text(IP_NET)
    _weights(tmp_path / "passwd.caffemodel.h5", lambda g: (
        g.create_dataset("0", (25, 4), "f4", external=[("/etc/passwd", 0, 400)]),
        g.create_dataset("1", data=np.zeros(25, "f4"))))
    _weights(tmp_path / "fifo.caffemodel.h5", lambda g: (
        g.create_dataset("0", (25, 4), "f4", external=[(str(tmp_path / "fifo"), 0, 400)]),
        g.create_dataset("1", data=np.zeros(25, "f4"))))
    _weights(tmp_path / "plain.caffemodel.h5", lambda g: (
        g.create_dataset("0", data=np.ones((25, 4), "f4")),
        g.create_dataset("1", data=np.zeros(25, "f4"))))

    def link(g):
        g["0"] = h5py.ExternalLink("plain.caffemodel.h5", "/data/ip/0")
        g.create_dataset("1", data=np.zeros(25, "f4"))
    _weights(tmp_path / "link.caffemodel.h5", link)
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.create_dataset("x", (10, 4), "f4", external=[("/etc/passwd", 0, 160)])
    (tmp_path / "list.txt").write_text("data.h5\n")
    (tmp_path / "h5data.prototxt").write_text(
        'layer { name: "h5" type: "HDF5Data" top: "x" '
        'hdf5_data_param { source: "list.txt" batch_size: 2 } }')
    results, out, _ = attack("""
        net = caffe.Net("ip.prototxt", caffe.TEST)
        expect("passwd", lambda: net.copy_from("passwd.caffemodel.h5"),
               "passwd.caffemodel.h5", "/data/ip/0", "external file '/etc/passwd'",
               "caffe.hdf5.ALLOW_EXTERNAL")
        expect("fifo", lambda: net.copy_from("fifo.caffemodel.h5"), "fifo.caffemodel.h5",
               "/data/ip/0")
        expect("link", lambda: net.copy_from("link.caffemodel.h5"), "link.caffemodel.h5",
               "/data/ip/0", "plain.caffemodel.h5")
        expect("hdf5data", lambda: caffe.Net("h5data.prototxt", caffe.TEST), "data.h5",
               "dataset /x", "/etc/passwd", "layer 'h5'")
        import caffe.hdf5
        caffe.hdf5.ALLOW_EXTERNAL = True      # the user's opt-in: links and storage followed
        net.copy_from("link.caffemodel.h5")
        print("LINKED", float(net.params["ip"][0].data.sum()), flush=True)
        expect("fifo opted in", lambda: net.copy_from("fifo.caffemodel.h5"),
               "fifo.caffemodel.h5", "external file", "not a regular file")
    """, tmp_path, seconds=90)
    check_all(results, ["passwd", "fifo", "link", "hdf5data", "fifo opted in"])
    assert "LINKED 100.0" in out


# -- 3. HDF5 fill-value and compression bombs ------------------------------------------
def _bomb(group, name, written=False):
    ds = group.create_dataset(name, (2 ** 31 - 1,), "f4", chunks=(2 ** 20,), compression="gzip")
    if written:
        ds[:10] = 1             # one chunk stored: the rest is fill value, 8 GiB to decompress


def test_hdf5_fill_value_and_compression_bombs(tmp_path):
    (tmp_path / "ip.prototxt").write_text(IP_NET)
    _weights(tmp_path / "bomb.caffemodel.h5", lambda g: _bomb(g, "0"))
    _weights(tmp_path / "eight.caffemodel.h5",
             lambda g: [_bomb(g, str(i), written=True) for i in range(8)])
    _weights(tmp_path / "one.caffemodel.h5", lambda g: _bomb(g, "0", written=True))
    with h5py.File(tmp_path / "bomb.solverstate.h5", "w") as f:
        f["iter"], f["current_step"] = np.array([1], "i4"), np.array([0], "i4")
        _bomb(f.create_group("history"), "0")
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.create_dataset("x", (2 ** 28, 7), "f4", chunks=(2 ** 16, 7), compression="gzip")
    (tmp_path / "list.txt").write_text("data.h5\n")
    (tmp_path / "h5data.prototxt").write_text(
        'layer { name: "h5" type: "HDF5Data" top: "x" '
        'hdf5_data_param { source: "list.txt" batch_size: 2 } }')
    (tmp_path / "solver.prototxt").write_text('net: "ip.prototxt" base_lr: 0.1 '
                                              'lr_policy: "fixed" max_iter: 1')
    sizes = {p.name: p.stat().st_size for p in tmp_path.glob("*.h5")}
    assert sizes["bomb.caffemodel.h5"] < 10_000 and sizes["data.h5"] < 10_000, sizes
    results, _, _ = attack("""
        net = caffe.Net("ip.prototxt", caffe.TEST)
        expect("fill", lambda: net.copy_from("bomb.caffemodel.h5"), "bomb.caffemodel.h5",
               "/data/ip/0", "never written")
        expect("eight", lambda: net.copy_from("eight.caffemodel.h5"), "eight.caffemodel.h5",
               "68719476704 bytes", "caffe.hdf5.MAX_READ_BYTES")
        expect("one", lambda: net.copy_from("one.caffemodel.h5"), "one.caffemodel.h5",
               "8589934588 bytes", "of memory are available")
        solver = caffe.SGDSolver("solver.prototxt")
        expect("solverstate", lambda: solver.restore("bomb.solverstate.h5"),
               "bomb.solverstate.h5", "/history/0", "never written")
        expect("hdf5data", lambda: caffe.Net("h5data.prototxt", caffe.TEST), "data.h5",
               "dataset /x", "never written", "layer 'h5'")
    """, tmp_path, seconds=90)
    check_all(results, ["fill", "eight", "one", "solverstate", "hdf5data"])


# -- 4. Images: size checked before reading ----------------------------------------------
def test_huge_image_files_are_refused_on_their_size(tmp_path):
    with open(tmp_path / "big.png", "wb") as f:
        f.truncate(6 * 2 ** 30)             # sparse: 6 GiB that take no disk
    (tmp_path / "list.txt").write_text("big.png 0\n")
    (tmp_path / "images.prototxt").write_text(
        'layer { name: "img" type: "ImageData" top: "data" top: "label" '
        'image_data_param { source: "list.txt" batch_size: 1 } }')
    results, _, stderr = attack("""
        from caffe.tools import convert_imageset
        expect("load_image", lambda: caffe.io.load_image("big.png"), "big.png",
               "6442450944 bytes", "caffe.data.image.MAX_IMAGE_BYTES")
        expect("ImageData", lambda: caffe.Net("images.prototxt", caffe.TEST), "big.png",
               "MAX_IMAGE_BYTES", "layer 'img'")
        from caffe.data.image import read_image_bytes
        expect("bytes", lambda: read_image_bytes("big.png"), "big.png", "MAX_IMAGE_BYTES")
        print("CONVERT", convert_imageset.main(["./", "list.txt", "out_lmdb"]), flush=True)
    """, tmp_path, seconds=90)
    check_all(results, ["load_image", "ImageData", "bytes"])
    # convert_imageset skips an unreadable image with a warning naming it, as Caffe does.
    assert "big.png" in stderr and "MAX_IMAGE_BYTES" in stderr


# -- 5. Library exceptions wrapped; allocations named ------------------------------------
# A writer growing an LMDB that is open here (convert_imageset while training reads it).
GROW = """
import lmdb
env = lmdb.open("grow_lmdb", map_size=256 << 20)
with env.begin(write=True) as txn:
    for i in range(2000):
        txn.put(b"z%07d" % i, b"x" * 40000)
"""

def _corrupt_leveldb(path):
    import plyvel
    db = plyvel.DB(str(path), create_if_missing=True)
    rng = np.random.default_rng(0)
    for i in range(2000):
        db.put(b"%08d" % i, array_to_datum(rng.integers(0, 255, (1, 8, 8), np.uint8), 0)
               .SerializeToString())
    db.compact_range()
    db.close()
    table = next(path.glob("*.ldb"))
    data = bytearray(table.read_bytes())
    for i in range(1000, len(data) // 2, 3):
        data[i] ^= 0xFF
    table.write_bytes(bytes(data))


def test_library_exceptions_are_wrapped(tmp_path):
    _corrupt_leveldb(tmp_path / "bad_leveldb")
    (tmp_path / "bad.prototxt").write_text(DATA_NET.format(source="bad_leveldb",
                                                           backend="LEVELDB"))
    (tmp_path / "huge.prototxt").write_text(
        'name: "huge" layer { name: "x" type: "Input" top: "big" '
        'input_param { shape { dim: 2000000000 } } } '
        'layer { name: "relu" type: "ReLU" bottom: "big" top: "out" }')
    _write_db(tmp_path / "grow_lmdb", "lmdb", records=2)
    results, out, stderr = attack(f"""
        import subprocess
        from caffe.data.db import open_db
        from caffe.tools.compute_image_mean import compute_mean
        from caffe.tools import caffe as cli
        # Where retrying is the fix (MapResizedError): the reader adopts the grown map.
        db = open_db("grow_lmdb", "lmdb")
        print("BEFORE", sum(1 for _ in db), flush=True)
        subprocess.run([sys.executable, "-c", {GROW!r}], check=True)
        print("AFTER", len(db), sum(1 for _ in db), flush=True)
        def forward():
            net = caffe.Net("bad.prototxt", caffe.TEST)
            for _ in range(1000):
                net.forward()
        expect("forward", forward, "bad_leveldb", "Corruption")
        expect("mean", lambda: compute_mean("bad_leveldb", "leveldb"), "bad_leveldb",
               "CorruptionError")
        expect("blob", lambda: caffe.Net("huge.prototxt", caffe.TEST).forward(),
               "blob 'big'", "8000000000 bytes", "layer 'relu'")
        # Past our own check, torch's allocator fails: its RuntimeError is wrapped too.
        caffe.memory.CHECK_ABOVE_BYTES = 1 << 62
        expect("torch", lambda: caffe.Net("huge.prototxt", caffe.TEST).forward(),
               "blob 'big'", "cannot allocate")
        caffe.memory.CHECK_ABOVE_BYTES = 64 << 20
        print("TIME", cli.main(["time", "-model", "huge.prototxt", "-iterations", "1"]),
              flush=True)
    """, tmp_path, seconds=120)
    check_all(results, ["forward", "mean", "blob", "torch"])
    assert "BEFORE 2" in out and "AFTER 2002 2002" in out, out
    assert "caffe.py" in stderr and "blob 'big'" in stderr       # caffe time: a logged error


# -- 6. Errors that say where ------------------------------------------------------------
def test_errors_name_their_place(tmp_path):
    from caffe.proto import caffe_pb2
    model = caffe_pb2.NetParameter(name="w")
    layer = model.layer.add(name="ip", type="InnerProduct")
    blob = layer.blobs.add()
    blob.shape.dim.extend([25, 20])
    blob.data.extend([0.0] * 493)
    bias = layer.blobs.add()
    bias.shape.dim.append(25)
    bias.data.extend([0.0] * 25)
    (tmp_path / "short.caffemodel").write_bytes(model.SerializeToString())
    (tmp_path / "ip.prototxt").write_text(IP_NET.replace("dim: 4", "dim: 20"))
    (tmp_path / "softmax.prototxt").write_text(
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } } '
        'layer { name: "prob" type: "Softmax" bottom: "x" top: "p" softmax_param { axis: 7 } }')
    (tmp_path / "windows.txt").write_text("# 0\nimg.png\n3 10 10\n1\n1 0.9 0 0 5 5\n"
                                          "# 1\nimg.png\n3 10 10\n1\n1 0.9 0 zero 5 5\n")
    (tmp_path / "window.prototxt").write_text(
        'layer { name: "win" type: "WindowData" top: "data" top: "label" '
        'window_data_param { source: "windows.txt" batch_size: 2 crop_size: 4 } }')
    (tmp_path / "out").mkdir()
    results, _, _ = attack("""
        import signal
        net = caffe.Net("ip.prototxt", caffe.TEST)
        expect("count", lambda: net.copy_from("short.caffemodel"), "short.caffemodel",
               "layer 'ip'", "500 elements", "493")
        expect("softmax", lambda: caffe.Net("softmax.prototxt", caffe.TEST), "layer 'prob'",
               "Softmax", "axis 7")
        expect("window", lambda: caffe.Net("window.prototxt", caffe.TEST), "windows.txt",
               "line 10", "layer 'win'")
        # A disk that is full: writes past RLIMIT_FSIZE fail as ENOSPC would (EFBIG).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
        expect("full", lambda: net.save("out/full.caffemodel"), "out/full.caffemodel",
               "cannot write")
        expect("full h5", lambda: net.save("out/full.caffemodel.h5"),
               "out/full.caffemodel.h5")
    """, tmp_path, seconds=90)
    check_all(results, ["count", "softmax", "window", "full", "full h5"])
    assert not list((tmp_path / "out").iterdir()), "a failed write must leave nothing"


# -- 7. Large prototxt files ---------------------------------------------------------------
LAYER = """layer {{
  name: "conv{i}"
  type: "Convolution"
  bottom: "d{i}"
  top: "d{j}"
  param {{ lr_mult: 1 decay_mult: 1 }}
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 1
    weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" value: 0 }} }}
}}
"""


def test_large_prototxt_parses_with_the_cpp_parser(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) gives protoc")
    text = 'name: "big"\n' + "".join(LAYER.format(i=i, j=i + 1) for i in range(6000))
    assert len(text) > 1.5e6
    (tmp_path / "big.prototxt").write_text(text)
    lines = text.splitlines()
    lines[len(lines) * 3 // 4] += " bogus_field: 1"
    (tmp_path / "bad.prototxt").write_text("\n".join(lines))
    bad_line = len(lines) * 3 // 4 + 1
    results, out, _ = attack(f"""
        import time
        from google.protobuf import text_format
        from caffe import formats
        from caffe.proto import caffe_pb2, fast_text
        start = time.perf_counter()
        fast = formats.read_net_param("big.prototxt")
        print("FAST", time.perf_counter() - start, len(fast.layer), flush=True)
        slow = caffe_pb2.NetParameter()
        text_format.Parse(open("big.prototxt").read(), slow)
        print("SAME", fast == slow, flush=True)
        expect("bad", lambda: formats.read_net_param("bad.prototxt"), "bad.prototxt",
               "line {bad_line}", "bogus_field")
        fast_text._protoc_command = lambda: None
        import logging
        logging.basicConfig()
        formats.read_net_param("big.prototxt")   # without protoc: a warning, then text_format
    """, tmp_path, seconds=150)
    check_all(results, ["bad"])
    assert "FAST" in out and "6000" in out and "SAME True" in out, out


# -- 8. One snapshot prefix, one run; the stop snapshot survives a second Ctrl-C ------------
SOLVER_NET = """
layer { name: "d" type: "DummyData" top: "x" top: "y" dummy_data_param {
  shape { dim: 2 dim: 3 } shape { dim: 2 }
  data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "z"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "y" top: "loss" }
"""


def _solver_files(folder, max_iter):
    (folder / "net.prototxt").write_text(SOLVER_NET)
    (folder / "snap").mkdir()
    (folder / "solver.prototxt").write_text(
        f'net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" max_iter: {max_iter} '
        f'snapshot: 100000000 snapshot_prefix: "snap/s" display: 0')


def test_concurrent_runs_on_one_snapshot_prefix(tmp_path):
    _solver_files(tmp_path, 5)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, caffe\n"
         "s = caffe.SGDSolver('solver.prototxt')\ns.lock_snapshot_prefix()\n"
         "print('HELD', flush=True)\nsys.stdin.read()"],
        cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        results, out, _ = attack("""
            solver = caffe.SGDSolver("solver.prototxt")
            expect("second run", solver.solve, "snap/s", "in use by another training run",
                   "pid {pid}")
            print("WRITTEN", sorted(os.listdir("snap")), flush=True)
        """.replace("{pid}", str(holder.pid)), tmp_path, seconds=90)
        check_all(results, ["second run"])
        assert "WRITTEN ['s.lock']" in out
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    _, out, _ = attack("""
        solver = caffe.SGDSolver("solver.prototxt")
        solver.solve()
        print("RERUN", sorted(os.listdir("snap")), flush=True)
    """, tmp_path, seconds=90)
    assert "s_iter_5.caffemodel" in out and "s_iter_5.solverstate" in out, out
    assert "s.lock" not in out, out     # taken over from the dead holder, removed at the end


def test_second_sigint_does_not_drop_the_stop_snapshot(tmp_path):
    _solver_files(tmp_path, 10 ** 8)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # The snapshot is slowed down so that the second SIGINT surely arrives while it runs.
    code = ("import sys, time\nimport caffe.formats as f\nfrom caffe.tools import caffe as c\n"
            "from caffe.solvers.solver import Solver\n"
            "write, step = f.atomic_write, Solver.step\n"
            "def slow(path, data):\n    print('WRITING', flush=True); time.sleep(1.5); "
            "write(path, data)\n"
            "def stepping(self, n):\n    print('STEPPING', flush=True); return step(self, n)\n"
            "f.atomic_write, Solver.step = slow, stepping\n"
            "sys.exit(c.main(['train', '-solver', 'solver.prototxt']))")
    # Not under `timeout`: it would pass the SIGINT on and kill 5 s later (-k); the
    # communicate() timeout below bounds the run instead.
    proc = subprocess.Popen([sys.executable, "-c", code],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "STEPPING"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        line = proc.stdout.readline()           # the stop snapshot has started
        assert line.strip() == "WRITING"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    names = sorted(os.listdir(tmp_path / "snap"))
    assert any(n.endswith(".caffemodel") for n in names), (names, err[-2000:])
    assert any(n.endswith(".solverstate") for n in names), (names, err[-2000:])
    assert "Finishing the stop snapshot first" in err
