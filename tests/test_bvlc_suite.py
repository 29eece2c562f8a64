"""BVLC's own python/caffe/test suite, run unchanged against this caffe.

The suite, with the BVLC tree's models/ and examples/ beside it (test_draw walks them), is
extracted from the reference tarball in ../shared and run with `python -m unittest discover`
in a fresh interpreter that imports this project's caffe. BVLC 1.0 passes all 52 on a
CPU-only build; so must we.
"""
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
TARBALL = ("reference", "bvlc-caffe-9b89154.tar.gz")
WANTED = ("python/caffe/test/", "models/", "examples/")


def extract_bvlc(dest, wanted=WANTED):
    """Extract the BVLC tree's members under `wanted` into dest; return the tree's root."""
    with tarfile.open(shared_path(*TARBALL)) as tar:
        members = []
        for m in tar.getmembers():
            inner = m.name.split("/", 1)[1] if "/" in m.name else ""
            if any(inner.startswith(w) for w in wanted):
                members.append(m)
        tar.extractall(dest, members=members, filter="data")
    (root,) = [p for p in Path(dest).iterdir() if p.is_dir()]
    return root


@pytest.mark.slow
def test_bvlc_python_suite_passes_unchanged(tmp_path):
    pytest.importorskip("six", reason="BVLC's test_net imports six (the test extra has it)")
    root = extract_bvlc(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    run = subprocess.run([sys.executable, "-m", "unittest", "discover", "-s", "test", "-v"],
                         cwd=root / "python" / "caffe", env=env, capture_output=True,
                         text=True, timeout=600)
    report = run.stderr
    ran = re.search(r"^Ran (\d+) tests?", report, re.M)
    assert ran, report[-3000:]
    assert run.returncode == 0 and re.search(r"^OK\b", report, re.M), report[-6000:]
    assert int(ran.group(1)) == 52, report[-3000:]
    # The suite ran against this project's caffe, not some other installation.
    where = subprocess.run([sys.executable, "-c", "import caffe; print(caffe.__file__)"],
                           cwd=root / "python" / "caffe", env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert Path(where).resolve() == ROOT / "caffe" / "__init__.py"
