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
NO_CUDA = "CUDA is not available to PyTorch on this machine"


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true",
                     help="run the device-parametrized suites on CUDA only, with "
                          "caffe.set_mode_gpu() for every test (same as PYCAFFE_TEST_DEVICE=cuda)")


def cuda_forced(config):
    """True when the run asks for CUDA: `--gpu` or PYCAFFE_TEST_DEVICE=cuda."""
    return bool(config.getoption("--gpu", default=False)) or \
        os.environ.get("PYCAFFE_TEST_DEVICE", "").lower() == "cuda"


def pytest_generate_tests(metafunc):
    # Parametrized here rather than in the fixture so that a CUDA run replaces the CPU ids
    # instead of adding to them (and a CPU-only run lists no skipped CUDA ids).
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", ["cuda"] if cuda_forced(metafunc.config) else DEVICES,
                             indirect=True)


@pytest.fixture
def device(request):
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip(NO_CUDA)
    return request.param


@pytest.fixture(autouse=True)
def _seed(request):
    import caffe
    caffe.set_random_seed(1701)
    if cuda_forced(request.config):
        if not torch.cuda.is_available():
            pytest.skip(NO_CUDA + " (PYCAFFE_TEST_DEVICE=cuda / --gpu asked for it)")
        caffe.set_mode_gpu()   # nets built without an explicit device land on the GPU
    yield
    caffe.set_mode_cpu()
