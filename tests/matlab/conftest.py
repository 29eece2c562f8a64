"""The matcaffe gateway, compiled once for the Octave tests of this folder."""
import pytest

from .octave import build_gateway, need_octave


@pytest.fixture(scope="session")
def matcaffe(tmp_path_factory):
    """The folder with +caffe and caffe_.mex, built from this checkout for this Python."""
    need_octave()
    return build_gateway(tmp_path_factory.mktemp("matcaffe"))
