"""HDF5Data and HDF5Output."""
import h5py
import numpy as np
import pytest

import caffe
from caffe.errors import LayerSetupError
from tests.layers.data.util import make_net


def test_hdf5_data_walks_files_in_order_and_shuffles_reproducibly(tmp_path, device):
    rows = []
    for f, n in enumerate((3, 4)):
        data = np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3) + 100 * f
        label = np.arange(n, dtype=np.int32) + 10 * f
        with h5py.File(tmp_path / f"{f}.h5", "w") as h5:
            h5["data"], h5["label"] = data, label
        rows.extend(zip(data, label))
    (tmp_path / "list.txt").write_text(f"{tmp_path / '0.h5'}\n{tmp_path / '1.h5'}\n")
    text = f"""layer {{ name: "h" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param {{ source: "{tmp_path / 'list.txt'}" batch_size: 5 %s }} }}"""
    net = make_net(text % "", device=device)
    got = [{k: v.copy() for k, v in net.forward().items()} for _ in range(3)]
    data = np.concatenate([g["data"] for g in got])
    labels = np.concatenate([g["label"] for g in got])
    assert data.shape == (15, 2, 3)
    for i in range(15):
        np.testing.assert_array_equal(data[i], rows[i % 7][0])
        assert labels[i] == rows[i % 7][1]

    def shuffled(seed):
        caffe.set_random_seed(seed)
        net = make_net(text % "shuffle: true")
        return np.concatenate([net.forward()["label"].copy() for _ in range(7)])   # 5 epochs

    a = shuffled(1)
    np.testing.assert_array_equal(a, shuffled(1))
    assert sorted(a[:7]) == sorted(r[1] for r in rows)
    assert not np.array_equal(a[:7], [r[1] for r in rows]) or not np.array_equal(a[7:14], a[:7])


def test_hdf5_data_missing_dataset(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as h5:
        h5["data"] = np.zeros((2, 3))
    (tmp_path / "list.txt").write_text(str(tmp_path / "a.h5"))
    with pytest.raises(LayerSetupError, match="no dataset 'label'"):
        make_net(f"""layer {{ name: "h" type: "HDF5Data" top: "data" top: "label"
            hdf5_data_param {{ source: "{tmp_path / 'list.txt'}" batch_size: 2 }} }}""")


def test_hdf5_output_writes_its_bottoms(tmp_path):
    out = tmp_path / "out.h5"
    net = make_net(f"""
        layer {{ name: "d" type: "DummyData" top: "data" top: "label"
          dummy_data_param {{ shape {{ dim: 3 dim: 2 }} shape {{ dim: 3 }}
                              data_filler {{ type: "uniform" }} data_filler {{ value: 4 }} }} }}
        layer {{ name: "o" type: "HDF5Output" bottom: "data" bottom: "label"
          hdf5_output_param {{ file_name: "{out}" }} }}""")
    net.forward()
    with h5py.File(out, "r") as h5:
        np.testing.assert_array_equal(h5["data"][()], net.blobs["data"].data.reshape(3, 2, 1, 1))
        np.testing.assert_array_equal(h5["label"][()], np.full((3, 1, 1, 1), 4.0))
