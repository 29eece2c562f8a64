"""caffe/__init__.py: what a bare `import caffe` offers, each name checked in a fresh
interpreter (an earlier import anywhere in the process would make any check pass)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fresh(code):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


# What BVLC's python/caffe/__init__.py imports, so that clients (caffe-tensorflow, MMdnn)
# use them right after `import caffe`.
@pytest.mark.parametrize("path, check", [
    ("proto.caffe_pb2", "obj.NetParameter().layer.add(name='x').name == 'x'"),
    ("proto", "obj.caffe_pb2.TEST == 1"),
    ("pycaffe", "obj.Net is caffe.Net and obj.SGDSolver is caffe.SGDSolver"),
    ("classifier", "obj.Classifier is caffe.Classifier"),
    ("detector", "obj.Detector is caffe.Detector"),
    ("net_spec", "obj.NetSpec is caffe.NetSpec"),
    ("io", "callable(obj.load_image)"),
])
def test_bvlc_submodules_after_a_bare_import(path, check):
    code = ("import caffe\nobj = caffe\n"
            f"for part in {path.split('.')!r}:\n    obj = getattr(obj, part)\n"
            f"assert {check}\nprint('ok')\n")
    assert fresh(code).strip() == "ok"


def test_a_bare_import_stays_cheap():
    out = fresh("import sys, caffe\n"
                "print(sorted(m for m in ('torch', 'google.protobuf', 'numpy') "
                "if m in sys.modules))")
    assert out.strip() == "[]"
