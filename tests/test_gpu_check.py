"""The prepared device check runs end to end (dry run, CPU), and the CUDA test option skips
cleanly where there is no CUDA."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_writes_the_report(tmp_path):
    models = shared_path("models")
    rows = gpu_check.main(["--dry-run", "--out", str(tmp_path), "--models", str(models),
                           "--budget", "0.05"])
    assert [precision for _, precision, _ in rows] == ["fp32", "bf16"] * len(gpu_check.DRY_ROWS)
    for spec, precision, res in rows:
        assert "error" not in res, (spec, precision, res)
        assert res["ours"] > 0 and res["torch"] > 0
        if precision == "fp32":   # same nets, same weights: the sides agree before timing
            assert res["check"] < 1e-4, spec
    text = (tmp_path / "gpu_report.md").read_text()
    assert "| LeNet train (dry) | 4 | fp32 |" in text
    assert "Golden suites with PYCAFFE_TEST_DEVICE=cuda" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
@pytest.mark.parametrize("how", ["env", "option"])
def test_cuda_option_skips_cleanly_without_cuda(how):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
            "tests/solvers/test_golden_solvers.py"]
    if how == "env":
        env["PYCAFFE_TEST_DEVICE"] = "cuda"
    else:
        env.pop("PYCAFFE_TEST_DEVICE", None)
        args.append("--gpu")
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "CUDA is not available" in out.stdout
    assert " passed" not in out.stdout and "failed" not in out.stdout
    assert "skipped" in out.stdout.splitlines()[-1]
