"""The documentation: every tutorial's code runs, and the mkdocs site builds with --strict.

A tutorial (docs/tutorials/*.md) is run block by block in a scratch folder, in order:
```python blocks are executed in one namespace, ```bash blocks run each command through the
entry point pyproject.toml names for it (in process: `caffe train ...` calls
caffe.tools.caffe.main), and a block whose first line is `# file: NAME` is written to NAME.
Iteration counts and sizes are made small by the textual replacements listed here; each one
must match, so a tutorial cannot drift from its test. Data the tutorials download (MNIST,
CIFAR-10, the CaffeNet weights) is stood in for by small local files of the same formats.
"""
import gzip
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)

# Small sizes for the test run: (text in the tutorial, replacement).
SMALL = {
    "lenet_mnist": [("max_iter: 10000", "max_iter: 6"), ("snapshot: 5000", "snapshot: 6"),
                    ("test_iter: 100 ", "test_iter: 2 "),
                    # Fewer Python steps than `caffe train` takes: its snapshot is the file
                    # the test looks for, and caffe refuses to overwrite a snapshot of another run.
                    ("niter = 200", "niter = 4"),
                    ("for test_it in range(100)", "for test_it in range(2)"),
                    ("test_interval = 25", "test_interval = 2")],
    "cifar10_quick": [("max_iter: 4000", "max_iter: 4"), ("max_iter: 5000", "max_iter: 6"),
                      ("snapshot: 4000", "snapshot: 4"), ("test_iter: 100", "test_iter: 1"),
                      ("test_interval: 500", "test_interval: 4"),
                      ("lr1.prototxt --snapshot=cifar10_quick_iter_4000",
                       "lr1.prototxt --snapshot=cifar10_quick_iter_4"),
                      ("batch_size: 100", "batch_size: 10"),
                      ("for _ in range(100):", "for _ in range(2):")],
    "fine_tuning": [("niter = 300", "niter = 4"), ("range(20)", "range(2)")],
    "feature_extraction": [("extract_features lenet_trained.caffemodel "
                            "lenet_features.prototxt fc1,score features_fc1,features_score 100",
                            "extract_features lenet_trained.caffemodel "
                            "lenet_features.prototxt fc1,score features_fc1,features_score 2")],
    "python_layer": [],
    "net_surgery": [],
    "export": [],
    "segmentation": [("size = 473 ", "size = 41 ")],
    "ssd_detection": [],
}


def blocks(name):
    text = (DOCS / "tutorials" / f"{name}.md").read_text()
    for old, new in SMALL[name]:
        assert old in text, f"{name}.md no longer contains {old!r}: update tests/test_docs.py"
        text = text.replace(old, new)
    return BLOCK.findall(text)


def entry_points():
    """Console command -> (module, function), from pyproject.toml's [project.scripts]."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict((name, target.split(":")) for name, target in
                re.findall(r'^(\S+)\s*=\s*"([^"]+)"', section, re.M))


def run_command(line):
    argv = shlex.split(line)
    module, function = entry_points()[argv[0]]
    status = getattr(importlib.import_module(module), function)(argv[1:])
    assert status in (0, None), f"`{line}` exited with status {status}"


def run_tutorial(name):
    """Run the tutorial's blocks in the current folder; returns its Python namespace."""
    namespace = {"__name__": f"tutorial_{name}"}
    for i, (lang, code) in enumerate(blocks(name)):
        first = code.split("\n", 1)[0]
        if first.startswith("# file: "):
            Path(first[len("# file: "):].strip()).write_text(code)
        elif lang == "python":
            exec(compile(code, f"docs/tutorials/{name}.md (block {i + 1})", "exec"), namespace)
        elif lang == "bash":
            for line in code.replace("\\\n", " ").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    run_command(line)
    return namespace


# -- stand-ins for the downloads -----------------------------------------------------------
def write_idx(folder, prefix, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    header = np.array([2051, len(images), 28, 28], ">u4").tobytes()
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(np.array([2049, len(labels)], ">u4").tobytes() + labels.tobytes())


def fake_mnist(folder):
    """MNIST's files cut down: 600 training and 200 test digits of the real t10k set."""
    from caffe.tools.convert_mnist_data import read_idx
    images, labels = read_idx(shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz"),
                              shared_path("data", "mnist", "t10k-labels-idx1-ubyte.gz"))
    write_idx(folder, "train", images[:600], labels[:600])
    write_idx(folder, "t10k", images[-200:], labels[-200:])


def fake_cifar(folder, per_batch=40):
    """CIFAR-10's binary batches (label byte + 3 x 32 x 32 bytes per record), random."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        records = rng.randint(0, 256, (per_batch, 1 + 3 * 32 * 32)).astype(np.uint8)
        records[:, 0] %= 10
        (folder / f"{name}.bin").write_bytes(records.tobytes())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tutorials")


@pytest.fixture(scope="module")
def lenet_trained(workdir):
    """The LeNet tutorial, run once; later tutorials start from what it leaves behind."""
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        fake_mnist(workdir / "data" / "mnist")
        namespace = run_tutorial("lenet_mnist")
    finally:
        os.chdir(cwd)
    assert (workdir / "lenet_trained.caffemodel").exists()
    return namespace


def test_lenet_mnist(lenet_trained, workdir):
    assert len(lenet_trained["train_loss"]) == 4
    assert (workdir / "lenet_iter_6.caffemodel").exists()     # from `caffe train`


@pytest.mark.parametrize("name", ["fine_tuning", "feature_extraction", "export"])
def test_tutorials_after_lenet(name, lenet_trained, workdir, monkeypatch):
    if name == "export":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    monkeypatch.chdir(workdir)
    run_tutorial(name)


def test_cifar10_quick(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_cifar(tmp_path / "data" / "cifar10" / "cifar-10-batches-bin")
    run_tutorial("cifar10_quick")
    assert (tmp_path / "cifar10_quick_iter_6.caffemodel").exists()


def test_python_layer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    run_tutorial("python_layer")
    sys.modules.pop("pyloss", None)


@pytest.mark.slow
def test_net_surgery(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # CaffeNet's definitions, its weights stood in for by random ones, and an image.
    models = tmp_path / "models" / "bvlc_reference_caffenet"
    models.mkdir(parents=True)
    shutil.copy(shared_path("models", "bvlc_reference_caffenet.prototxt"),
                models / "deploy.prototxt")
    surgery = tmp_path / "examples" / "net_surgery"
    surgery.mkdir(parents=True)
    shutil.copy(shared_path("models", "bvlc_caffenet_full_conv.prototxt"),
                surgery / "bvlc_caffenet_full_conv.prototxt")
    net = caffe.Net(str(models / "deploy.prototxt"), caffe.TEST)
    rng = np.random.RandomState(0)
    for params in net.params.values():
        for p in params:
            p.data[...] = rng.randn(*p.data.shape) * 0.01
    net.save(str(models / "bvlc_reference_caffenet.caffemodel"))
    del net
    (tmp_path / "images").mkdir()
    from PIL import Image
    Image.fromarray(rng.randint(0, 256, (360, 480, 3)).astype(np.uint8)).save(
        tmp_path / "images" / "cat.jpg")
    run_tutorial("net_surgery")


@pytest.mark.slow
def test_segmentation(tmp_path, monkeypatch):
    """PSPNet-50's published structure (tests/fork_nets.py) at 41 x 41 stands in for the
    473 x 473 download, with seeded random weights; the image is random."""
    from PIL import Image

    from tests import fork_nets
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pspnet50_ADE20K_473.prototxt").write_text(fork_nets.pspnet(41, 150))
    fork_nets.seeded_weights("pspnet50_ADE20K_473.prototxt", "pspnet50_ADE20K.caffemodel")
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 256, (30, 50, 3)).astype(np.uint8)).save("image.jpg")
    namespace = run_tutorial("segmentation")
    assert namespace["labels"].shape == (30, 50)
    assert (tmp_path / "overlay.png").exists()
def test_ssd_detection(tmp_path, monkeypatch):
    # MobileNet-SSD's layout (channels cut down) with random weights stands in for the
    # download; a street image for a photo.
    from tests.detection_nets import mobilenet_ssd
    from tests.test_detection_models import randomize
    monkeypatch.chdir(tmp_path)
    (tmp_path / "MobileNetSSD_deploy.prototxt").write_text(mobilenet_ssd(width=4))
    net = caffe.Net("MobileNetSSD_deploy.prototxt", caffe.TEST)
    randomize(net, np.random.RandomState(0))
    net.save("MobileNetSSD_deploy.caffemodel")
    from PIL import Image
    pixels = np.random.RandomState(1).randint(0, 256, (240, 320, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "street.jpg")
    namespace = run_tutorial("ssd_detection")
    assert namespace["detections"] and (tmp_path / "detections.png").exists()


# -- the site ------------------------------------------------------------------------------
def test_reference_pages_cover_every_layer_and_solver_field():
    sys.path.insert(0, str(DOCS))
    try:
        import gen_reference
    finally:
        sys.path.remove(str(DOCS))
    layers = gen_reference.layers_page()
    for layer_type in caffe.layer_type_list():
        assert f"\n## {layer_type}\n" in layers, layer_type
    solver = gen_reference.solver_page()
    for field in caffe.caffe_pb2.SolverParameter.DESCRIPTOR.fields:
        assert f"`{field.name}`" in solver, field.name


def test_mkdocs_build_strict(tmp_path):
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        pytest.skip("mkdocs is not installed (pip install mkdocs, part of the test extras)")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site"), "--config-file", str(ROOT / "mkdocs.yml")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "layers" / "index.html").exists()
    assert (tmp_path / "site" / "tutorials" / "lenet_mnist" / "index.html").exists()
