"""mypy on the package and on typical user code (py.typed: the annotations are public API)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "typing"


def mypy(*targets):
    pytest.importorskip("mypy", reason="mypy (the [test] extra) type-checks the public API")
    return subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports",
                           "--no-incremental", "--cache-dir=/dev/null", "--no-error-summary",
                           *targets], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_package_and_user_code_type_check():
    result = mypy("caffe", str(HERE / "public_api.py"))
    assert result.returncode == 0, result.stdout[-4000:]


def test_misuse_is_reported():
    result = mypy(str(HERE / "misuse.py"))
    flagged = {int(n) for n in re.findall(r"misuse\.py:(\d+): error", result.stdout)}
    expected = {i for i, line in enumerate((HERE / "misuse.py").read_text().splitlines(), 1)
                if "# E:" in line}
    assert expected <= flagged, result.stdout
    assert (ROOT / "caffe" / "py.typed").exists()
