"""The forks' golden cases (tests/golden_forks, recorded by tests/golden_forks/record.py in
PSPNet's and SegNet's own builds), run through caffe.Net: forward 1e-4, gradients 1e-3.

Their weights.caffemodel files were written by the forks, so loading them also checks that
the forks' binary dialects (caffe/proto/dialects.py) parse here."""
from pathlib import Path

import pytest

from tests.golden_runner import run_case

GOLDEN = Path(__file__).resolve().parents[1] / "golden_forks"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "golden.npz").is_file())


@pytest.mark.parametrize("case", CASES)
def test_golden_fork_layer(case, device):
    run_case(GOLDEN / case, device)
