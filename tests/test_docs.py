"""The documentation: every Python snippet in README.md and docs/ runs, every tutorial runs
whole, and the mkdocs site builds with --strict.

A block preceded by `<!-- docs-test: skip: REASON -->` is not run (for what this machine
cannot have: a Spark cluster, the internet); the reason is shown as the skip's.

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
import torch

import caffe
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^(?:<!-- docs-test: skip: (.+?) -->\n)?```(\w*)[^\n]*\n(.*?)^```",
                   re.S | re.M)

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
    return [(lang, code) for skip, lang, code in BLOCK.findall(text) if not skip]


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


# -- every other page's Python snippets --------------------------------------------------------
def pages_with_python():
    pages = [ROOT / "README.md"] + sorted(DOCS.rglob("*.md"))
    return [p.relative_to(ROOT).as_posix() for p in pages
            if p.parent != DOCS / "tutorials" and "```python" in p.read_text()]


# What the snippets leave to the reader, stood in for: a small deploy net with the blob names
# they use (conv1, pool5, fc7, prob) and its weights, a solver, class names, input batches.
DEPLOY = """name: "standin"
input: "data" input_shape { dim: 2 dim: 3 dim: 16 dim: 16 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "pool5" type: "Pooling" bottom: "conv1" top: "pool5"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc7" type: "InnerProduct" bottom: "pool5" top: "fc7"
        inner_product_param { num_output: 8 weight_filler { type: "xavier" } } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
"""
TRAIN_NET = DEPLOY.replace(
    'input: "data" input_shape { dim: 2 dim: 3 dim: 16 dim: 16 }',
    'layer { name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param {\n'
    '  shape { dim: 2 dim: 3 dim: 16 dim: 16 } shape { dim: 2 }\n'
    '  data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }').replace(
    'layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }',
    'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" top: "loss" }')
SOLVER = 'net: "train.prototxt" base_lr: 0.01 lr_policy: "fixed" max_iter: 2 ' \
         'snapshot_prefix: "standin"\n'


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """A scratch folder with the stand-in files; returns the names snippets take as given."""
    monkeypatch.chdir(tmp_path)
    Path("deploy.prototxt").write_text(DEPLOY)
    Path("train.prototxt").write_text(TRAIN_NET)
    Path("solver.prototxt").write_text(SOLVER)
    net = caffe.Net("deploy.prototxt", caffe.TEST)
    net.save("weights.caffemodel")
    net.save("w.caffemodel")
    Path("synset_words.txt").write_text("".join(f"n0{i} class {i}\n" for i in range(5)))
    batch = np.random.RandomState(0).rand(2, 3, 16, 16).astype(np.float32)
    return {"images": batch, "image_batch": batch}


@pytest.fixture
def global_state_kept():
    """Snippets switch modes and torch's determinism (docs/gpu.md) and add a layer type
    (docs/architecture.md's worked example): undo that afterwards."""
    from caffe.export.onnx_builder import CONVERTERS
    from caffe.export.torch_module import TORCH_CONVERTERS
    from caffe.layer import LAYER_REGISTRY
    registries = [(r, dict(r)) for r in (LAYER_REGISTRY, TORCH_CONVERTERS, CONVERTERS)]
    environ = dict(os.environ)
    deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    yield
    for registry, saved in registries:
        registry.clear()
        registry.update(saved)
    os.environ.clear()
    os.environ.update(environ)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
    caffe.set_mode_cpu()


@pytest.mark.parametrize("page", pages_with_python())
def test_page_snippets_run(page, stand_ins, global_state_kept):
    """A page's ```python blocks, in order, in one namespace (as a reader pastes them)."""
    namespace = {"__name__": "docs_snippet", **stand_ins}
    skipped, ran = [], 0
    for i, (skip, lang, code) in enumerate(BLOCK.findall((ROOT / page).read_text())):
        if lang != "python":
            continue
        if skip:
            skipped.append(f"block {i + 1}: {skip}")
            continue
        exec(compile(code, f"{page} (block {i + 1})", "exec"), namespace)
        ran += 1
    if not ran:
        pytest.skip("; ".join(skipped))


def test_skip_markers_stand_before_a_block_and_are_few():
    """A marker that no longer precedes a code block would silently stop nothing."""
    marked = 0
    for page in ["README.md"] + [p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md")]:
        text = (ROOT / page).read_text()
        skips = [skip for skip, _, _ in BLOCK.findall(text) if skip]
        assert text.count("<!-- docs-test:") == len(skips), page
        marked += len(skips)
    assert marked <= 3, "few snippets may be left unrun: stand in for what they need instead"


def test_every_tutorial_has_a_test():
    assert set(SMALL) == {p.stem for p in (DOCS / "tutorials").glob("*.md")}


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
