"""mypy on the package and on typical user code (py.typed: the annotations are public API)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "typing"


def test_mypy_on_the_package_and_its_public_api(tmp_path):
    """caffe/ and typical user code type-check; wrong calls to the public API are reported."""
    pytest.importorskip("mypy", reason="mypy (the [test] extra) type-checks the public API")
    assert (ROOT / "caffe" / "py.typed").exists()
    # One run for all three: mypy's start-up (numpy's stubs, ...) dominates.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", f"--cache-dir={tmp_path}", "--no-error-summary",
         "caffe", str(HERE / "public_api.py"), str(HERE / "misuse.py")],
        capture_output=True, text=True, cwd=ROOT)
    errors = re.findall(r"^(\S+?):(\d+): error", result.stdout, re.M)
    elsewhere = [line for line in result.stdout.splitlines()
                 if ": error" in line and "misuse.py" not in line]
    assert not elsewhere, "\n".join(elsewhere)
    flagged = {int(n) for path, n in errors if path.endswith("misuse.py")}
    expected = {i for i, line in enumerate((HERE / "misuse.py").read_text().splitlines(), 1)
                if "# E:" in line}
    assert flagged == expected, result.stdout
