"""Issue 26, items 1-8 (and 11's -flagfile): code that runs where it must not, files that
escape their folder or cannot be read back. Each attack runs in a child process under
`timeout` and a 1 GiB address-space limit on top of what the child holds after importing torch
and caffe (tests/reliability_attack.py); each failed on the main branch before these fixes.
"""
import hashlib
import http.server
import os
import re
import shutil
import threading

import h5py
import pytest

from .reliability_attack import attack, check_all

# A Python layer whose module leaves a mark when it is imported: the proof that code ran.
EVIL = """import os
with open(os.environ["MARK_FILE"], "a") as f:
    f.write("imported evil from %s\\n" % __file__)
import caffe
class Layer(caffe.Layer):
    def setup(self, bottom, top): pass
    def reshape(self, bottom, top): top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top): top[0].data[...] = bottom[0].data
    def backward(self, top, propagate_down, bottom): pass
"""
PYTHON_NET = """
layer { name: "d" type: "DummyData" top: "x" top: "y" dummy_data_param {
  shape { dim: 2 dim: 3 } shape { dim: 2 }
  data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "py" type: "Python" bottom: "x" top: "z"
        python_param { module: "evil" layer: "Layer" } }
layer { name: "ip" type: "InnerProduct" bottom: "z" top: "w"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "w" bottom: "y" top: "loss" }
"""
PLAIN_NET = PYTHON_NET.replace('type: "Python" bottom: "x" top: "z"\n        python_param '
                               '{ module: "evil" layer: "Layer" }', 'type: "ReLU" bottom: "x" '
                               'top: "z"')


def _python_net_files(folder):
    (folder / "evil.py").write_text(EVIL)
    (folder / "net.prototxt").write_text(PYTHON_NET)
    (folder / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" max_iter: 2 display: 1 '
        'snapshot_prefix: "snap"')
    return {"MARK_FILE": str(folder / "mark.txt")}


def _marks(folder):
    path = folder / "mark.txt"
    return path.read_text() if path.exists() else ""


# -- 1. Leftover words, bool flags and the Python-layer switch ---------------------------------
def test_a_bool_flag_value_after_a_space_is_refused(tmp_path):
    env = _python_net_files(tmp_path)
    with open(tmp_path / "big.flags", "wb") as f:
        f.truncate(10 << 20)                    # sparse: 10 MiB of NULs
    results, out, err = attack("""
        from caffe.tools import caffe as cli
        from caffe.layers.python_layer import python_layers_allowed
        print("SPACE", cli.main(["train", "-solver", "solver.prototxt",
                                 "-allow_python_layers", "false"]), flush=True)
        print("EQUALS", cli.main(["train", "-solver", "solver.prototxt",
                                  "-allow_python_layers=false"]), flush=True)
        print("STRAY", cli.main(["time", "-model", "net.prototxt", "stray"]), flush=True)
        print("ZERO", cli.main(["time", "-flagfile=/dev/zero"]), flush=True)
        print("BIG", cli.main(["time", "-flagfile", "big.flags"]), flush=True)
        for value in ("false", "0", None, 2):
            try:
                caffe.set_python_layers_allowed(value)
                print("TOOK", repr(value), python_layers_allowed(), flush=True)
            except TypeError as e:
                print("REFUSED", repr(value), "|", e, flush=True)
        caffe.set_python_layers_allowed(False)
        print("BOOL", python_layers_allowed(), flush=True)
        caffe.set_python_layers_allowed(True)
    """, tmp_path, seconds=120, env=env)
    assert "SPACE 1" in out and "EQUALS 1" in out and "STRAY 1" in out, out + err[-3000:]
    assert not _marks(tmp_path), "a Python layer ran: " + _marks(tmp_path)
    assert "Unexpected argument 'false'" in err
    assert "-allow_python_layers=false" in err          # the hint names the right spelling
    assert "Unexpected argument 'stray'" in err
    assert "Python layers are disabled" in err          # -allow_python_layers=false works
    assert "usage: caffe <command> <args>" in err
    # -flagfile: a device or an oversized file is refused at once, naming the limit.
    assert "ZERO 1" in out and "flagfile '/dev/zero' is not a regular file" in err
    assert "BIG 1" in out and "MAX_FLAGFILE_BYTES" in err
    for value in ("'false'", "'0'", "None", "2"):
        assert f"REFUSED {value} | set_python_layers_allowed() takes True or False" in out
    assert "TOOK" not in out and "BOOL False" in out


def test_view_refuses_a_bool_flag_value_after_a_space(tmp_path):
    _python_net_files(tmp_path)
    results, out, err = attack("""
        from caffe.tools import view
        try:
            view.main(["net.prototxt", "-allow_python_layers", "false", "-o", "page.html"])
        except SystemExit as e:
            print("EXIT", e.code, flush=True)
    """, tmp_path, seconds=60)
    assert "EXIT 2" in out and "unrecognized arguments: false" in err, out + err[-2000:]
    assert not (tmp_path / "page.html").exists()


# -- 2. Child processes import nothing from the working folder ---------------------------------
PLANTED = """import os
with open(os.environ["MARK_FILE"], "a") as f:
    f.write("planted %s ran in pid %d\\n" % (__name__, os.getpid()))
raise SystemExit(3)
"""
# The parent's own sys.path must not see the planted folder either (it was started with
# `python -c`, whose '' entry is the working folder): the test is about the children.
LEAVE_CWD = """
        sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
        os.chdir("work")"""


def test_training_workers_import_nothing_from_the_working_folder(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "net.prototxt").write_text(PLAIN_NET)
    (work / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" max_iter: 2 display: 1 '
        'snapshot_prefix: "snap"')
    (work / "numpy.py").write_text(PLANTED)
    (work / "torch").mkdir()
    (work / "torch" / "__init__.py").write_text(PLANTED)
    env = {"MARK_FILE": str(tmp_path / "mark.txt")}
    _, out, err = attack(LEAVE_CWD + """
        from caffe.tools import caffe as cli
        print("STATUS", cli.main(["train", "-solver", "solver.prototxt", "-workers", "2"]),
              flush=True)
    """, tmp_path, seconds=240, env=env)
    assert not _marks(tmp_path), _marks(tmp_path) + err[-3000:]
    assert "STATUS 0" in out, err[-3000:]
    assert "Optimization Done." in err


SPAWNER = """import multiprocessing, sys
def child(queue):
    queue.put(sys.path)
if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    print("SPAWNED", queue.get(timeout=60), flush=True)
    process.join()
"""


def test_spawned_grandchildren_import_nothing_from_the_working_folder(tmp_path):
    """A child's own multiprocessing 'spawn' children (a Python layer or a data library may
    start them) inherit PYTHONSAFEPATH: the planted json.py is not what they import."""
    work = tmp_path / "work"
    (work / "multiprocessing").mkdir(parents=True)
    (work / "multiprocessing" / "__init__.py").write_text(PLANTED)
    (work / "json.py").write_text(PLANTED)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "spawner.py").write_text(SPAWNER)
    env = {"MARK_FILE": str(tmp_path / "mark.txt")}
    _, out, err = attack(LEAVE_CWD + f"""
        import subprocess
        from caffe.child_process import child_env, python_module_command
        env = child_env()
        env["PYTHONPATH"] += os.pathsep + {str(tmp_path / "lib")!r}
        done = subprocess.run(python_module_command("spawner"), env=env, capture_output=True,
                              text=True, timeout=90)
        print("CHILD", done.returncode, done.stdout, done.stderr[-2000:], flush=True)
    """, tmp_path, seconds=120, env=env)
    assert not _marks(tmp_path), _marks(tmp_path) + out
    assert "CHILD 0 SPAWNED" in out, out + err[-2000:]
    assert str(work) not in out.split("SPAWNED", 1)[1].split("\n", 1)[0]


LAYER = """layer {{ name: "conv{i}" type: "Convolution" bottom: "d{i}" top: "d{j}"
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 weight_filler {{ type: "xavier" }} }}
}}
"""


def _large_prototxt(count=12000, name="big"):
    text = f'name: "{name}"\n' + "".join(LAYER.format(i=i, j=i + 1) for i in range(count))
    assert len(text) >= 1 << 20
    return text


def test_protoc_children_import_nothing_from_the_working_folder(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) gives protoc")
    work = tmp_path / "work"
    (work / "grpc_tools").mkdir(parents=True)
    (work / "grpc_tools" / "__init__.py").write_text(PLANTED)
    (work / "grpc_tools" / "protoc.py").write_text(PLANTED)
    (work / "big.prototxt").write_text(_large_prototxt())
    env = {"MARK_FILE": str(tmp_path / "mark.txt")}
    _, out, err = attack(LEAVE_CWD + """
        from caffe import child_process, formats
        from caffe.proto import fast_text
        print("LAYERS", len(formats.read_net_param("big.prototxt").layer), flush=True)
        # Python 3.10 has no -P: the bootstrap that drops '' from sys.path is used there.
        child_process.SAFE_PATH_FLAG = False
        print("COMMAND", fast_text._protoc_command()[1], flush=True)
        print("LAYERS", len(formats.read_net_param("big.prototxt").layer), flush=True)
    """, tmp_path, seconds=240, env=env)
    assert not _marks(tmp_path), _marks(tmp_path) + err[-3000:]
    assert out.count("LAYERS 12000") == 2 and "COMMAND -c" in out, out + err[-3000:]


# -- 3. view and export never import a Python layer's module; vis honours the switch -------
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="graphviz's dot is absent (make test installs it)")


@needs_dot
def test_view_and_export_do_not_run_python_layers(tmp_path):
    env = _python_net_files(tmp_path)
    _, out, err = attack("""
        from caffe.tools import caffe as cli
        print("VIEW", cli.main(["view", "net.prototxt", "-o", "page.html"]), flush=True)
        print("EXPORT", cli.main(["export", "-model", "net.prototxt", "-onnx", "n.onnx"]),
              flush=True)
        print("EXPORT TORCH", cli.main(["export", "-model", "net.prototxt", "-torch", "n.pt2",
                                        "-phase", "TRAIN"]), flush=True)
        # caffe vis runs the net (its activations need the layers): it honours the switch.
        print("VIS", cli.main(["vis", "-model", "net.prototxt", "-o", "vis_out", "-blobs", "ip",
                               "-allow_python_layers=false"]), flush=True)
        print("MARKS BEFORE OPT-IN", os.path.exists(os.environ["MARK_FILE"]), flush=True)
        print("OPTED IN", cli.main(["view", "net.prototxt", "-o", "shapes.html",
                                    "-allow_python_layers"]), flush=True)
    """, tmp_path, seconds=180, env=env)
    assert "VIEW 0" in out and "EXPORT 1" in out and "EXPORT TORCH 1" in out, out + err[-3000:]
    assert "MARKS BEFORE OPT-IN False" in out and "VIS 1" in out
    assert "layer 'py' (Python): Python layers are disabled" in err
    assert "cannot export layer 'py' (type Python)" in err and "not imported" in err
    assert not (tmp_path / "n.onnx").exists() and not (tmp_path / "n.pt2").exists()
    page = (tmp_path / "page.html").read_text()
    assert "shapes not computed: Python layer &#x27;py&#x27; would run code" in page
    assert '"name": "py"' in page and '"shape": "?"' in page
    # -allow_python_layers: the user's explicit opt-in builds the net (and runs the layer).
    assert "OPTED IN 0" in out and "imported evil" in _marks(tmp_path)
    assert "2 \\u00d7 3" in (tmp_path / "shapes.html").read_text()


# -- 4. view: names are text, never markup -----------------------------------------------------
HOSTILE_NET = r"""name: "{{DATA}}"
layer { name: "{{SVG}}" type: "Input" top: "</script><script>window.pwned = 'blob'</script>"
        input_param { shape { dim: 1 dim: 2 } } }
layer { name: "<img src=x onerror=\"window.pwned = 'layer'\">" type: "ReLU"
        bottom: "</script><script>window.pwned = 'blob'</script>" top: "{{TITLE}}" }
layer { name: "<svg onload=\"window.pwned = 'svg'\"></svg>--><!--" type: "ReLU"
        bottom: "{{TITLE}}" top: "{{CSP}}" }
"""


@needs_dot
def test_view_page_escapes_every_name(tmp_path):
    (tmp_path / "hostile.prototxt").write_text(HOSTILE_NET)
    _, out, err = attack("""
        from caffe.tools import caffe as cli
        print("VIEW", cli.main(["view", "hostile.prototxt", "-o", "page.html"]), flush=True)
    """, tmp_path, seconds=120)
    assert "VIEW 0" in out, err[-3000:]
    page = (tmp_path / "page.html").read_text()
    assert "<img src=x" not in page and "<svg onload" not in page
    assert "<script>window.pwned" not in page
    assert page.count("<script") == 2                  # the data block and the page's own
    assert re.search(r'<meta http-equiv="Content-Security-Policy" content="default-src '
                     r"&#x27;none&#x27;; script-src &#x27;sha256-", page)
    for placeholder in ("{{DATA}}", "{{SVG}}", "{{TITLE}}", "{{CSP}}"):
        assert placeholder in page                     # names stay text, not filled again
    _check_in_browser(tmp_path, page)


def _check_in_browser(tmp_path, page):
    """Load the page from a file and from caffe.view's server; click every layer and blob
    in the list (the panel is innerHTML): no name's script runs."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is absent (the "
                                    "test extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from caffe import view
    from tests.view.test_view import CHROMIUM, DRIVER, _chromium_or_skip
    _chromium_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=DRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    server = view.serve(page, port=0, background=True)
    try:
        for url in ((tmp_path / "page.html").as_uri(), server.url):
            driver.get(url)
            WebDriverWait(driver, 30).until(
                lambda d: d.execute_script("return document.body.dataset.ready") == "1")
            for item in driver.find_elements(By.CSS_SELECTOR, "#layers li"):
                item.click()
            for node in driver.find_elements(By.CSS_SELECTOR, "#graph g.node"):
                driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click'))",
                                      node)
            assert driver.execute_script("return window.pwned") is None, url
            names = driver.execute_script(
                "return Array.from(document.querySelectorAll('#layers li'))"
                ".map(function (li) { return li.textContent; })")
            assert "<img src=x onerror=\"window.pwned = 'layer'\"> (ReLU)" in names
            assert driver.title.startswith("{{DATA}}: 3 layers")
    finally:
        driver.quit()
        server.shutdown()


# -- 5. zoo download: every write inside the model folder, http(s) only ------------------------
PAYLOAD = b"weights" * 1000
SHA1 = hashlib.sha1(PAYLOAD).hexdigest()


class _Zoo(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.endswith("/redirect.caffemodel"):
            self.send_response(302)
            # urllib refuses file:// itself but would follow ftp://
            self.send_header("Location", "ftp://127.0.0.1/etc/passwd")
            self.end_headers()
            return
        if self.path.endswith("/missing.caffemodel"):
            self.send_error(404)
            return
        body = PAYLOAD if not self.path.endswith("/bad.caffemodel") else PAYLOAD[:-1]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def zoo_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Zoo)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _readme(folder, caffemodel, url):
    folder.mkdir(parents=True)
    (folder / "readme.md").write_text(f"---\nname: m\ncaffemodel: {caffemodel}\n"
                                      f"caffemodel_url: {url}\nsha1: {SHA1}\n---\n")


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_zoo_download_writes_only_inside_the_model_folder(tmp_path, zoo_server):
    zoo = tmp_path / "zoo"
    _readme(zoo / "a" / "b" / "up", "../../../escaped.caffemodel", f"{zoo_server}/m.caffemodel")
    _readme(zoo / "absolute", str(tmp_path / "abs.caffemodel"), f"{zoo_server}/m.caffemodel")
    _readme(zoo / "file", "m.caffemodel", "file:///etc/passwd")
    _readme(zoo / "ftp", "m.caffemodel", "ftp://127.0.0.1/m.caffemodel")
    _readme(zoo / "redirect", "m.caffemodel", f"{zoo_server}/redirect.caffemodel")
    _readme(zoo / "link", "m.caffemodel", f"{zoo_server}/m.caffemodel")
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", zoo / "link" / ".zoo-partial")
    _readme(zoo / "good", "m.caffemodel", f"{zoo_server}/m.caffemodel")
    before = _listing(tmp_path)
    results, out, err = attack(f"""
        from caffe import zoo
        def get(folder, **kw):
            return lambda: zoo.download("zoo/" + folder, log=lambda *a: None, **kw)
        expect("up", get("a/b/up"), "zoo/a/b/up/readme.md", "caffemodel",
               "../../../escaped.caffemodel", "not a plain file name")
        expect("absolute", get("absolute"), "caffemodel", "abs.caffemodel",
               "not a plain file name")
        expect("file", get("file"), "zoo/file/readme.md", "caffemodel_url",
               "file:///etc/passwd", "not an http or https URL")
        expect("ftp", get("ftp"), "caffemodel_url", "ftp://")
        expect("redirect", get("redirect"), "redirected to 'ftp://127.0.0.1/etc/passwd'")
        expect("link", get("link"), ".zoo-partial", "not a folder")
        expect("mirror", get("good", mirror="file:///tmp"), "-mirror", "file:///tmp",
               "not an http or https URL")
        expect("verify", lambda: zoo.verify("zoo/a/b/up"), "not a plain file name")
        print("GOOD", zoo.download("zoo/good", log=lambda *a: None), flush=True)
    """, tmp_path, seconds=120)
    check_all(results, ["up", "absolute", "file", "ftp", "redirect", "link", "mirror",
                        "verify"])
    assert "GOOD zoo/good" in out
    assert (zoo / "good" / "m.caffemodel").read_bytes() == PAYLOAD
    assert _listing(tmp_path) == sorted(before + ["zoo/good/m.caffemodel"])
    assert not list((tmp_path / "outside").iterdir())


def test_a_failed_zoo_download_leaves_no_model_folder(tmp_path, zoo_server, monkeypatch):
    """A named model is assembled in a hidden staging folder and renamed when complete."""
    results, out, err = attack(f"""
        from caffe import zoo
        from caffe.tools import zoo as tool
        entry = dict(zoo.MODELS["bvlc_alexnet"], caffemodel="m.caffemodel", sha1="{SHA1}",
                     prototxt="deploy.prototxt", prototxt_url="{zoo_server}/d.prototxt",
                     prototxt_sha1="{SHA1}")
        for name, url in (("missing", "missing.caffemodel"), ("bad", "bad.caffemodel")):
            zoo.MODELS["bvlc_alexnet"] = dict(entry, caffemodel_url="{zoo_server}/" + url)
            print(name.upper(), tool.main(["download", "bvlc_alexnet", "-root", "models"]),
                  sorted(os.listdir("models")), flush=True)
        zoo.MODELS["bvlc_alexnet"] = dict(entry, caffemodel_url="{zoo_server}/m.caffemodel")
        print("GOOD", tool.main(["download", "bvlc_alexnet", "-root", "models"]),
              sorted(os.listdir("models")), sorted(os.listdir("models/bvlc_alexnet")),
              flush=True)
    """, tmp_path, seconds=120)
    assert "MISSING 1 []" in out and "BAD 1 []" in out, out + err[-3000:]
    assert "GOOD 0 ['bvlc_alexnet'] ['deploy.prototxt', 'm.caffemodel', 'readme.md']" in out


# -- 6. One UTF-8 check for small and large prototxt files -------------------------------------
def test_large_prototxt_refuses_non_utf8_names_as_small_ones_do(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) gives protoc")
    bad = 'layer { name: "bad\\377name" type: "ReLU" bottom: "d0" top: "d0" }\n'
    (tmp_path / "small.prototxt").write_text('name: "small"\n' + bad)
    (tmp_path / "large.prototxt").write_text(_large_prototxt(9000).replace("\n", "\n" + bad, 1))
    (tmp_path / "large_ok.prototxt").write_text(_large_prototxt(9000, "caf\\303\\251"))
    results, out, _ = attack("""
        from caffe import formats
        from caffe.proto import caffe_pb2
        for name in ("small", "large"):
            expect(name, lambda: formats.read_net_param(name + ".prototxt"),
                   name + ".prototxt line 2", "bad\\\\377name", "not UTF-8")
        print("OK NAME", formats.read_net_param("large_ok.prototxt").name, flush=True)
        net = caffe_pb2.NetParameter()
        net.layer.add().name = "x"
        expect("binary", lambda: formats.parse_binary(
            net.SerializeToString().replace(b"x", b"\\xff"), caffe_pb2.NetParameter(), "b.bin"),
            "b.bin", "layer[0].name", "UTF-8")
    """, tmp_path, seconds=240)
    check_all(results, ["small", "large", "binary"])
    assert "OK NAME caf\u00e9" in out


# -- 7. HDF5 snapshots: any layer name round-trips ---------------------------------------------
NAMES = ["a", "a/0", "x/y", "conv1/7x7_s2", "%2F", "a%2F0", "."]


def _names_net(names):
    text = ('layer { name: "in" type: "DummyData" top: "x" top: "label" dummy_data_param { '
            'shape { dim: 2 dim: 3 } shape { dim: 2 } data_filler { type: "gaussian" } '
            'data_filler { type: "constant" value: 1 } } }\n')
    bottom = "x"
    for i, name in enumerate(names):
        text += (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "t{i}" '
                 f'inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" }} '
                 f'bias_filler {{ type: "gaussian" }} }} }}\n')
        bottom = f"t{i}"
    return text + f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "{bottom}" ' \
                  f'bottom: "label" top: "loss" }}\n'


def test_hdf5_snapshots_round_trip_every_layer_name(tmp_path):
    (tmp_path / "net.prototxt").write_text(_names_net(NAMES))
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" max_iter: 2 display: 0 '
        'snapshot: 2 snapshot_prefix: "snap" snapshot_format: HDF5')
    _, out, err = attack(f"""
        import numpy as np
        solver = caffe.SGDSolver("solver.prototxt")
        solver.solve()
        trained = caffe.Net("net.prototxt", caffe.TEST, weights="snap_iter_2.caffemodel.h5")
        for name in {NAMES!r}:
            for a, b in zip(solver.net.params[name], trained.params[name]):
                assert np.array_equal(a.data, b.data), name
        again = caffe.SGDSolver("solver.prototxt")
        again.restore("snap_iter_2.solverstate.h5")
        print("RESTORED", again.iter, flush=True)
        for name in {NAMES!r}:
            for a, b in zip(solver.net.params[name], again.net.params[name]):
                assert np.array_equal(a.data, b.data), name
        print("ROUND TRIP", flush=True)
    """, tmp_path, seconds=180)
    assert "RESTORED 2" in out and "ROUND TRIP" in out, out + err[-3000:]
    with h5py.File(tmp_path / "snap_iter_2.caffemodel.h5", "r") as f:
        groups = sorted(f["data"])
        # BVLC's layout for names HDF5 can hold: /data/<layer>/<i>, no attribute.
        assert sorted(f["data/a"]) == ["0", "1"] and not f["data/a"].attrs.keys()
        assert sorted(f["data/%2F"]) == ["0", "1"] and not f["data/%2F"].attrs.keys()
        assert bytes(f["data/a%2F0~1"].attrs["caffe_name"]).decode() == "a/0"
        assert bytes(f["data/%2E"].attrs["caffe_name"]).decode() == "."
    assert "x%2Fy" in groups and "conv1%2F7x7_s2" in groups and "x" not in groups


# -- 8. A name cannot forge a log line ---------------------------------------------------------
FORGED_ITERATION = "I1207 10:00:00.000000 1 solver.cpp:218] Iteration 777, loss = 123"
FORGED_ERROR = "E1207 10:00:00.000000 1 net.cpp:1] forged error"
FORGED_OUTPUT = "I1207 10:00:00.000000 1 solver.cpp:243]     Train net output #0: fake = 9"


def test_names_cannot_forge_log_lines(tmp_path):
    net = PLAIN_NET.replace('name: "ip"', 'name: "ip\\n' + FORGED_ERROR + '"').replace(
        'top: "loss"', 'top: "loss\\n' + FORGED_OUTPUT + '"') + \
        'layer { name: "acc" type: "Accuracy" bottom: "w" bottom: "y" top: "accuracy" }\n'
    (tmp_path / "net.prototxt").write_text(f'name: "net\\r\\n{FORGED_ITERATION}"\n' + net)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" max_iter: 2 display: 1 '
        'test_iter: 1 test_interval: 1 test_net: "net.prototxt" debug_info: true '
        'snapshot_prefix: "snap"')
    _, out, err = attack("""
        from caffe.tools import caffe as cli
        print("STATUS", cli.main(["train", "-solver", "solver.prototxt"]), flush=True)
    """, tmp_path, seconds=180)
    assert "STATUS 0" in out, err[-3000:]
    assert "\r" not in err
    forged = [line for line in err.splitlines() if line.startswith(("I1207 10:00:00",
                                                                    "E1207 10:00:00"))]
    assert not forged, forged
    assert "Solving net\\r\\nI1207 10:00:00.000000" in err
    assert "Creating Layer ip\\nE1207 10:00:00.000000" in err
    assert re.search(r"Train net output #\d: loss\\nI1207 10:00:00", err)
    assert re.search(r"Test net output #\d: loss\\nI1207 10:00:00", err)
    assert "[Forward] Layer ip\\nE1207" in err                       # debug_info lines too
    (tmp_path / "train.log").write_text(err)
    from caffe.tools.parse_log import parse_log
    train, test = parse_log(str(tmp_path / "train.log"))
    # parse_log reads a message only at its start: the escaped name's text is no value.
    assert [row["NumIters"] for row in train] == [0, 1], train
    assert [row["NumIters"] for row in test] == [0, 1, 2], test
    assert all("accuracy" in row for row in train + test), train + test
    assert all("fake" not in row for row in train + test), train + test
