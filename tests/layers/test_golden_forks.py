"""The forks' golden cases (tests/golden_forks/<case>/), recorded by the forks' own CPU builds
(tests/golden_forks/record.py: PSPNet, SegNet, OpenCV; record_detection.py: SSD, Faster R-CNN),
run through caffe.Net: forward 1e-4, gradients 1e-3.

Their weights.caffemodel files were written by the forks, so loading them also checks that
the forks' binary dialects (caffe/proto/dialects.py) parse here; the four cases of Faster
R-CNN's CUDA-only code (a SOURCE file says so) come from its kernels run on the CPU."""
from pathlib import Path

import pytest

from caffe.formats import read_net_param

from tests.golden_runner import run_case

GOLDEN = Path(__file__).resolve().parents[1] / "golden_forks"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "golden.npz").is_file())


def test_every_fork_layer_has_a_case():
    types = {lp.type for c in CASES for lp in read_net_param(GOLDEN / c / "net.prototxt").layer
             if lp.name == "layer"}
    assert {"PriorBox", "Permute", "Normalize", "SmoothL1Loss", "MultiBoxLoss",
            "DetectionOutput", "DetectionEvaluate", "ROIPooling", "Interp", "BN", "Upsample",
            "DenseCRF", "MultiStageMeanfield", "SegAccuracy", "ShuffleChannel"} <= types


@pytest.mark.parametrize("case", CASES)
def test_golden_fork_layer(case, device):
    run_case(GOLDEN / case, device)
