"""The detection forks' golden cases (tests/golden_forks/<case>/), recorded by the forks' own
CPU builds with tests/golden_forks/record.py, run through the runner of test_golden.py."""
from pathlib import Path

import pytest

from tests.layers.test_golden import run_golden_folder

GOLDEN = Path(__file__).resolve().parents[1] / "golden_forks"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "golden.npz").is_file())


def test_every_fork_layer_has_a_case():
    types = {(GOLDEN / c / "net.prototxt").read_text().split('name: "layer" type: "')[1]
             .split('"')[0] for c in CASES}
    assert {"PriorBox", "Permute", "Normalize", "SmoothL1Loss", "MultiBoxLoss",
            "DetectionOutput", "DetectionEvaluate"} <= types


@pytest.mark.parametrize("case", CASES)
def test_golden_fork_layer(case, device):
    run_golden_folder(GOLDEN / case, device)
