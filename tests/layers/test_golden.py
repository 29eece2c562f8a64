"""Every case recorded by BVLC Caffe in ../shared/golden/layers, run through caffe.Net."""
import pytest

from tests.conftest import SHARED, shared_path
from tests.golden_runner import run_case

GOLDEN = SHARED / "golden" / "layers"
CASES = sorted(p.name for p in GOLDEN.iterdir()) if GOLDEN.is_dir() else ["(absent)"]


@pytest.mark.parametrize("case", CASES)
def test_golden_layer(case, device):
    run_case(shared_path("golden", "layers", case), device)
