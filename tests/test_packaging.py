"""The distribution: the built wheel in a fresh venv, the sdist's own tests, the metadata."""
import os
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# No PYTHONPATH: the source tree on it (and its pycaffe.egg-info) would pass for an install.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _build(kind, out):
    pytest.importorskip("build", reason="the build package (the [test] extra) makes the wheel")
    result = subprocess.run([sys.executable, "-m", "build", f"--{kind}", "--no-isolation",
                             "--outdir", str(out), str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    suffix = ".whl" if kind == "wheel" else ".tar.gz"
    return next(out.glob(f"pycaffe-*{suffix}"))


def _fresh_venv(path, wheel):
    """A venv with the wheel installed that borrows this interpreter's packages (torch from
    disk, never a download) through a .pth line, without their .pth hooks (so not an editable
    pycaffe). The wheel goes in first: pip would take the borrowed pycaffe for it."""
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "-q", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, env=CLEAN_ENV)
    assert install.returncode == 0, install.stderr[-2000:]
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], env=CLEAN_ENV,
                             capture_output=True, text=True, check=True).stdout.strip()
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "zz_borrowed.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    return python


@pytest.mark.slow
def test_wheel_in_a_fresh_venv(tmp_path):
    wheel = _build("wheel", tmp_path / "dist")
    python = _fresh_venv(tmp_path / "venv", wheel)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = CLEAN_ENV
    # The smoke script (the one `make compat` runs) exercises every core dependency.
    smoke = subprocess.run([str(python), str(ROOT / ".ci" / "compat_smoke.py")], cwd=outside,
                           env=env, capture_output=True, text=True)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert "hdf5" in smoke.stdout and "lmdb" in smoke.stdout
    where = subprocess.run([str(python), "-c", "import caffe, caffe.proto.caffe_pb2 as p; "
                            "print(caffe.__file__); print(p.__file__)"], cwd=outside, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert all(str(tmp_path / "venv") in line for line in where.splitlines()), where
    version = subprocess.run([str(tmp_path / "venv" / "bin" / "caffe"), "--version"],
                             cwd=outside, env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("caffe version 1.0.0")
    # An installed copy is never regenerated in place.
    generate = subprocess.run([str(python), "-m", "caffe.proto.generate"], cwd=outside,
                              env=env, capture_output=True, text=True)
    assert generate.returncode == 1 and "installed copy" in generate.stderr
    assert "Traceback" not in generate.stderr


@pytest.mark.slow
def test_sdist_ships_tests_that_run(tmp_path):
    sdist = _build("sdist", tmp_path / "dist")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "src", filter="data")
    top = next((tmp_path / "src").iterdir())
    for needed in ("tests/conftest.py", "tests/__init__.py", "LICENSE", "CHANGELOG.md",
                   "caffe/py.typed", "caffe/proto/caffe_pb2.pyi", "caffe/proto/caffe.proto"):
        assert f"{top.name}/{needed}" in names, needed
    env = dict(os.environ, PYTHONPATH=str(top))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_proto.py", "-k", "field_numbers or defaults"],
                            cwd=top, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout


def test_metadata():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "BSD-2-Clause" and project["license-files"] == ["LICENSE"]
    assert "BSD 2-Clause" in (ROOT / "LICENSE").read_text()
    assert project["requires-python"] == ">=3.10"
    core = {d.split(">")[0].split("<")[0].split("=")[0].strip() for d in project["dependencies"]}
    assert core == {"torch", "numpy", "protobuf", "h5py", "lmdb", "Pillow", "tqdm"}
    extras = project["optional-dependencies"]
    for extra in ("leveldb", "draw", "plot", "io", "onnx", "tensorboard", "spark", "docs",
                  "examples", "all", "test"):
        assert extra in extras, extra
    assert "pycaffe[all" in " ".join(extras["test"])
    # `pip install 'pycaffe[all]'` (the README's word) brings every optional feature.
    (everything,) = extras["all"]
    features = set(everything.split("[", 1)[1].rstrip("]").split(","))
    assert features == set(extras) - {"all", "test", "fuzz"}
    assert {"Homepage", "Source", "Documentation"} <= set(project["urls"])
    scripts = project["scripts"]
    assert scripts["caffe"] == "caffe.tools.caffe:program"
