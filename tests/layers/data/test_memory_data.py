"""MemoryData and DummyData."""
import numpy as np
import pytest

from caffe.data import DataError
from caffe.errors import LayerSetupError
from tests.layers.data.util import make_net


MEMORY = """layer { name: "m" type: "MemoryData" top: "data" top: "label"
    memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 } }"""


def test_memory_data_serves_set_input_arrays_batch_by_batch(device):
    net = make_net(MEMORY, device=device)
    with pytest.raises(DataError, match="set_input_arrays"):
        net.forward()
    data = np.arange(24, dtype=np.float32).reshape(4, 1, 2, 3)
    net.set_input_arrays(data, np.arange(4, dtype=np.float32))
    for start in (0, 2, 0):
        out = net.forward()
        np.testing.assert_array_equal(out["data"], data[start:start + 2])
        np.testing.assert_array_equal(out["label"].ravel(), [start, start + 1])
    with pytest.raises(DataError, match="multiple of the batch size"):
        net.set_input_arrays(data[:3], np.arange(3, dtype=np.float32))
    with pytest.raises(DataError, match="data must be N x 1 x 2 x 3"):
        net.set_input_arrays(data.reshape(4, 2, 1, 3), np.arange(4, dtype=np.float32))


def test_dummy_data_fillers_and_legacy_shapes(device):
    net = make_net("""layer { name: "d" type: "DummyData" top: "a" top: "b"
        dummy_data_param { num: 2 channels: 3 height: 1 height: 4 width: 5
                           data_filler { value: 7 } data_filler { type: "gaussian" } } }""",
                   device=device)
    first = net.forward()["b"].copy()
    second = net.forward()
    assert net.blobs["a"].data.shape == (2, 3, 1, 5) and second["b"].shape == (2, 3, 4, 5)
    assert (second["a"] == 7).all()
    assert not np.array_equal(first, second["b"])       # non-constant fillers refill
    zeros = make_net("""layer { name: "z" type: "DummyData" top: "z"
        dummy_data_param { shape { dim: 2 dim: 2 } } }""").forward()["z"]
    assert (zeros == 0).all()
    with pytest.raises(LayerSetupError, match="shape once or once per top"):
        make_net("""layer { name: "z" type: "DummyData" top: "a" top: "b" top: "c"
            dummy_data_param { shape { dim: 1 } shape { dim: 2 } } }""")
