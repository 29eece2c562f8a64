"""Shared fixtures: the ../shared reference folder and the devices every test runs on."""
import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REQUIRE_SHARED = os.environ.get("PYCAFFE_REQUIRE_SHARED") == "1"


def shared_path(*parts):
    """A path under ../shared; skips the test (fails under CI) when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"reference material {path} is absent (../shared beside the project)"
        if REQUIRE_SHARED:
            pytest.fail(message + "; PYCAFFE_REQUIRE_SHARED=1 makes it required")
        pytest.skip(message)
    return path


@pytest.fixture
def shared():
    return shared_path()


# The suite runs thousands of tiny ops: one intra-op thread avoids thread start-up
# costs that dominate them (and thrashing when the machine is busy).
torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    import caffe
    caffe.set_random_seed(1701)
    yield
    caffe.set_mode_cpu()
