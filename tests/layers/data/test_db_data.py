"""The Data layer: the reference databases, bad input, the prefetch thread."""
import gc
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import caffe
from caffe.data import DataError, array_to_datum, open_db
from caffe.data.image import resize_linear
from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2
from tests.conftest import shared_path
from tests.layers.data.util import make_net


def data_net(source, backend="LMDB", batch=10, transform="", extra="", phase=caffe.TEST,
             tops=('"data"', '"label"'), device="cpu"):
    return make_net(f"""layer {{ name: "d" type: "Data" {" ".join("top: " + t for t in tops)}
        data_param {{ source: "{source}" backend: {backend} batch_size: {batch} {extra} }}
        transform_param {{ {transform} }} }}""", phase, device)


def golden_list():
    formats = shared_path("golden", "formats")
    lines = [line.split() for line in (formats / "small.txt").read_text().splitlines()]
    return formats, {path: int(label) for path, label in lines}, [path for path, _ in lines]


def png(formats, path):
    return np.asarray(Image.open(formats / path))


def local_copy(path, tmp_path):
    """LevelDB writes into its folder when opened, so tests read a copy."""
    if path.name.endswith("leveldb"):
        shutil.copytree(path, tmp_path / path.name)
        return tmp_path / path.name
    return path


# -- the reference databases --------------------------------------------------------------
@pytest.mark.parametrize("name", ["small_raw_lmdb", "small_png_lmdb", "small_raw_leveldb",
                                  "small_resized_leveldb"])
def test_golden_databases_read_back_through_data_layer(name, tmp_path):
    formats, labels, order = golden_list()
    source = local_copy(formats / name, tmp_path)
    with open_db(source, "leveldb" if "leveldb" in name else "lmdb") as db:
        key_order = [k.decode().split("_", 1)[1] for k, _ in db]   # the shuffled one: by key
    net = data_net(source, "LEVELDB" if "leveldb" in name else "LMDB")
    resized = "resized" in name
    assert net.blobs["data"].data.shape == (10, 1, 20, 24) if resized else (10, 1, 28, 28)
    seen = []
    for _ in range(7):                      # 70 records: wraps around the 64 at the end
        out = net.forward()
        seen.extend(zip(out["data"].copy(), out["label"].copy()))
    for i, (image, label) in enumerate(seen):
        path = key_order[i % 64]
        expected = png(formats, path)
        if resized:
            # Bit-exact with OpenCV's INTER_LINEAR (see caffe/data/image.py); Pillow's
            # bilinear resize is up to 74 levels away from these records.
            expected = resize_linear(expected[:, :, None], 20, 24)[:, :, 0]
        np.testing.assert_array_equal(image[0], expected, err_msg=f"{name} item {i} ({path})")
        assert label == labels[path]
    if not resized:
        assert key_order == order


def test_data_layer_transform_scale_crop_and_single_top(device):
    formats, labels, order = golden_list()
    net = data_net(formats / "small_raw_lmdb", batch=4, tops=('"data"',),
                   transform="scale: 0.00390625 crop_size: 20", device=device)
    out = net.forward()
    assert list(net.outputs) == ["data"]
    expected = np.stack([png(formats, p)[4:24, 4:24] for p in order[:4]])[:, None] / 256.0
    np.testing.assert_array_equal(out["data"], expected)


def test_data_layer_train_randomness_is_reproducible():
    formats = shared_path("golden", "formats")

    def batches(seed):
        caffe.set_random_seed(seed)
        net = data_net(formats / "small_raw_lmdb", batch=16, phase=caffe.TRAIN,
                       transform="crop_size: 24 mirror: true")
        return np.concatenate([net.forward()["data"].copy() for _ in range(3)])

    a, b, c = batches(3), batches(3), batches(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_data_layer_force_color_decodes_encoded_png_as_bgr():
    formats, _, order = golden_list()
    net = data_net(formats / "small_png_lmdb", batch=2, transform="force_color: true")
    data = net.forward()["data"]
    assert data.shape == (2, 3, 28, 28)
    for c in range(3):
        np.testing.assert_array_equal(data[0, c], png(formats, order[0]))


def test_two_nets_share_one_lmdb_and_prefetch_zero_is_synchronous():
    formats, labels, order = golden_list()
    source = formats / "small_raw_lmdb"
    a = data_net(source, batch=8)
    b = data_net(source, batch=8, extra="prefetch: 0")
    for _ in range(3):
        np.testing.assert_array_equal(a.forward()["label"], b.forward()["label"])
    assert b.layers[0]._layer.prefetcher.count == 0


def test_rand_skip_starts_inside_the_database():
    formats, labels, order = golden_list()
    caffe.set_random_seed(2)
    skip = int(torch.randint(50, ()))
    caffe.set_random_seed(2)
    net = data_net(formats / "small_raw_lmdb", batch=3, extra="rand_skip: 50")
    assert list(net.forward()["label"]) == [labels[p] for p in order[skip:skip + 3]]


def write_db(path, records, backend="lmdb"):
    with open_db(path, backend, "new") as db:
        for key, value in records:
            db.put(key, value)
    return path


def test_float_data_records_and_leveldb(tmp_path):
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    db = write_db(tmp_path / "f", [("a", array_to_datum(values, 3).SerializeToString())],
                  "leveldb")
    out = data_net(db, "LEVELDB", batch=2, transform="scale: 2").forward()
    np.testing.assert_allclose(out["data"], np.stack([values, values]) * 2, rtol=1e-7)
    assert list(out["label"]) == [3, 3]


# -- bad input ------------------------------------------------------------------------------
def test_missing_database_fails_at_setup(tmp_path):
    with pytest.raises(LayerSetupError, match="'d' \\(Data\\).*does not exist"):
        data_net(tmp_path / "nowhere")


def test_record_that_is_not_a_datum(tmp_path):
    good = array_to_datum(np.zeros((1, 2, 2), np.uint8), 1).SerializeToString()
    blob = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=2, data=[1, 2, 3, 4])
    db = write_db(tmp_path / "db", [("a", good), ("b", blob.SerializeToString())])
    net = data_net(db, batch=1)
    net.forward()                           # record 'a' is fine
    with pytest.raises(DataError, match="layer 'd'.*record 'b' is not a Datum"):
        net.forward()
    bad_first = write_db(tmp_path / "db2", [("x", b"\xff\xff\xff")])
    with pytest.raises(LayerSetupError, match="record 'x' is not a Datum"):
        data_net(bad_first)


def test_image_that_does_not_decode_names_the_record(tmp_path):
    datum = caffe_pb2.Datum(data=b"\x89PNG not really", label=1, encoded=True)
    db = write_db(tmp_path / "db", [("00000007_broken.png", datum.SerializeToString())])
    with pytest.raises(LayerSetupError, match="00000007_broken.png.*could not be decoded"):
        data_net(db)


def test_mean_file_that_does_not_fit(tmp_path):
    formats = shared_path("golden", "formats")
    with pytest.raises(LayerSetupError, match="mean_file is 3x224x224"):
        data_net(formats / "small_raw_lmdb",
                 transform=f'crop_size: 20 mean_file: "{formats / "ResNet_mean.binaryproto"}"')


# -- prefetch thread life cycle --------------------------------------------------------------
def prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("prefetch")]


def test_prefetch_thread_stops_when_the_net_is_collected():
    formats = shared_path("golden", "formats")
    before = len(prefetch_threads())
    net = data_net(formats / "small_raw_lmdb", batch=4)
    net.forward()
    assert len(prefetch_threads()) == before + 1
    del net
    gc.collect()
    deadline = time.time() + 5
    while len(prefetch_threads()) > before and time.time() < deadline:
        time.sleep(0.01)
    assert len(prefetch_threads()) == before


def test_error_in_prefetch_thread_is_raised_in_the_consumer():
    from caffe.data.prefetch import Prefetcher

    class Source:
        def __init__(self):
            self.n, self.closed = 0, False

        def load_batch(self):
            self.n += 1
            if self.n == 3:
                raise DataError("third batch is bad")
            return self.n

        def close(self):
            self.closed = True

    source = Source()
    prefetcher = Prefetcher(source, count=2)
    assert [prefetcher.next(), prefetcher.next()] == [1, 2]
    with pytest.raises(DataError, match="third batch"):
        prefetcher.next()
    with pytest.raises(DataError, match="third batch"):
        prefetcher.next()
    assert source.closed
