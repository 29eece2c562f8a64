"""Pieces of data-parallel training that need no second process: data sharding, buckets."""
import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import caffe
from caffe import parallel
from caffe.data import array_to_datum, open_db
from caffe.formats import parse_text
from caffe.proto import caffe_pb2


@pytest.fixture
def worker_of(monkeypatch):
    """worker_of(rank, count): pretend to be one of several workers."""
    def set_place(rank, count):
        monkeypatch.setitem(parallel.world_state, "rank", rank)
        monkeypatch.setitem(parallel.world_state, "count", count)
    return set_place


def make_net(text, phase=caffe.TRAIN):
    return caffe.Net(parse_text(text, caffe_pb2.NetParameter()), phase, dtype=torch.float64)


def labels_seen(net, batches, top="label"):
    return [int(v) for _ in range(batches) for v in net.forward()[top].reshape(-1)]


def test_data_shard_is_the_whole_data_for_test_nets(worker_of):
    assert parallel.data_shard(caffe.TRAIN) == (0, 1)
    worker_of(2, 3)
    assert parallel.data_shard(caffe.TRAIN) == (2, 3)
    assert parallel.data_shard(caffe.TEST) == (0, 1)
    assert not parallel.is_root()


@pytest.fixture
def lmdb_of_7(tmp_path):
    path = tmp_path / "db"
    with open_db(path, "lmdb", "new") as db:
        for i in range(7):
            db.put(f"{i:04d}", array_to_datum(np.full((1, 1, 2), i, np.uint8), i)
                   .SerializeToString())
    return path


def data_net(source, phase=caffe.TRAIN, batch=3):
    return make_net(f"""layer {{ name: "d" type: "Data" top: "data" top: "label"
        data_param {{ source: "{source}" backend: LMDB batch_size: {batch} }} }}""", phase)


@pytest.mark.parametrize("rank", [0, 1])
def test_data_layer_keeps_every_other_record(lmdb_of_7, worker_of, rank):
    worker_of(rank, 2)
    # The running record count decides, across wrap-arounds (7 records: parity flips).
    stream = [i % 7 for i in range(28)]
    assert labels_seen(data_net(lmdb_of_7), 4) == stream[rank::2][:12]
    assert labels_seen(data_net(lmdb_of_7, caffe.TEST), 2) == stream[:6]


def test_data_layer_workers_together_read_what_one_reads(lmdb_of_7, worker_of):
    one = labels_seen(data_net(lmdb_of_7, batch=6), 5)
    parts = []
    for rank in range(3):
        worker_of(rank, 3)
        parts.append(labels_seen(data_net(lmdb_of_7, batch=2), 5))
    for it in range(5):
        together = sorted(v for p in parts for v in p[2 * it:2 * it + 2])
        assert together == sorted(one[6 * it:6 * it + 6])


def test_image_data_strides_through_the_list(tmp_path, worker_of):
    for i in range(5):
        Image.fromarray(np.full((2, 2, 3), i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "list.txt").write_text("".join(f"{i}.png {i}\n" for i in range(5)))
    text = f"""layer {{ name: "im" type: "ImageData" top: "data" top: "label"
        image_data_param {{ source: "{tmp_path / 'list.txt'}" root_folder: "{tmp_path}/"
                            batch_size: 2 }} }}"""
    worker_of(1, 2)
    assert labels_seen(make_net(text), 3) == [1, 3, 0, 2, 4, 1]
    assert labels_seen(make_net(text, caffe.TEST), 3) == [0, 1, 2, 3, 4, 0]


def test_hdf5_data_strides_through_rows_across_files(tmp_path, worker_of):
    names = []
    for f, n in enumerate((3, 1, 4)):
        with h5py.File(tmp_path / f"{f}.h5", "w") as h5:
            h5["label"] = np.arange(n, dtype=np.float32) + 10 * f
        names.append(str(tmp_path / f"{f}.h5"))
    (tmp_path / "list.txt").write_text("\n".join(names))
    text = f"""layer {{ name: "h" type: "HDF5Data" top: "label"
        hdf5_data_param {{ source: "{tmp_path / 'list.txt'}" batch_size: 3 }} }}"""
    stream = [0, 1, 2, 10, 20, 21, 22, 23] * 4
    for rank in range(3):
        worker_of(rank, 3)
        assert labels_seen(make_net(text), 3) == stream[rank::3][:9]
    assert labels_seen(make_net(text, caffe.TEST), 3) == stream[:9]


SHARED_NET = """name: "shared"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" }
        inner_product_param { num_output: 4 } }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "b"
        inner_product_param { num_output: 4 } }
layer { name: "c" type: "InnerProduct" bottom: "b" top: "c" param { name: "w" }
        inner_product_param { num_output: 4 } }
layer { name: "loss" type: "Reduction" bottom: "c" top: "loss" loss_weight: 1 }
"""


def test_buckets_wait_for_the_first_layer_using_a_shared_param():
    net = make_net(SHARED_NET)
    params = net.learnable_params
    buckets = parallel.plan_buckets(net, cap_bytes=0)       # one bucket per layer
    plan = [(net._layer_names[b.layer], [params.index(p) for p in b.blobs]) for b in buckets]
    # Learnable blobs: a.w (shared with c), a.bias, b.w, b.bias, c.bias.
    assert plan == [("c", [4]), ("b", [2, 3]), ("a", [0, 1])]
    assert [b.layer for b in buckets] == sorted((b.layer for b in buckets), reverse=True)
    one = parallel.plan_buckets(net, cap_bytes=2 ** 30)
    assert len(one) == 1 and net._layer_names[one[0].layer] == "a" and len(one[0].blobs) == 5
