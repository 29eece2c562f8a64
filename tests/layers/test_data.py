"""Data layers through caffe.Net: the reference databases, the other data layers, bad input."""
import gc
import shutil
import threading
import time

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import caffe
from caffe.data import DataError, array_to_datum, open_db
from caffe.data.image import resize_linear
from caffe.errors import LayerSetupError
from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from tests.conftest import shared_path


def make_net(text, phase=caffe.TEST, device="cpu"):
    return caffe.Net(parse_text(text, caffe_pb2.NetParameter()), phase, dtype=torch.float64,
                     device=device)


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


# -- ImageData --------------------------------------------------------------------------------
@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = {}
    for i in range(6):
        rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp_path / f"im{i}.png")
        images[f"im{i}.png"] = rgb
    (tmp_path / "list.txt").write_text("".join(f"im{i}.png {10 + i}\n" for i in range(6)))
    return tmp_path, images


def image_net(folder, params="", transform="", batch=2):
    return make_net(f"""layer {{ name: "im" type: "ImageData" top: "data" top: "label"
        image_data_param {{ source: "{folder / 'list.txt'}" root_folder: "{folder}/"
                            batch_size: {batch} {params} }}
        transform_param {{ {transform} }} }}""")


def test_image_data_reads_bgr_in_list_order(image_folder):
    folder, images = image_folder
    net = image_net(folder, batch=4)
    out = [{k: v.copy() for k, v in net.forward().items()} for _ in range(2)]
    data = np.concatenate([o["data"] for o in out])
    labels = np.concatenate([o["label"] for o in out])
    assert list(labels) == [10, 11, 12, 13, 14, 15, 10, 11]
    np.testing.assert_array_equal(data[1], images["im1.png"][:, :, ::-1].transpose(2, 0, 1))
    np.testing.assert_array_equal(data[6], images["im0.png"][:, :, ::-1].transpose(2, 0, 1))


def test_image_data_grey_and_resize(image_folder):
    folder, images = image_folder
    net = image_net(folder, "is_color: false new_height: 5 new_width: 4", batch=1)
    data = net.forward()["data"]
    rgb = images["im0.png"].astype(np.int64)
    grey = ((rgb[..., 0] * 4899 + rgb[..., 1] * 9617 + rgb[..., 2] * 1868 + 8192) >> 14)
    expected = resize_linear(grey.astype(np.uint8)[:, :, None], 5, 4)[:, :, 0]
    assert data.shape == (1, 1, 5, 4)
    np.testing.assert_array_equal(data[0, 0], expected)


def test_image_data_shuffle_is_reproducible_for_a_seed(image_folder):
    folder, _ = image_folder

    def labels(seed):
        caffe.set_random_seed(seed)
        net = image_net(folder, "shuffle: true", batch=6)
        return [list(net.forward()["label"].copy()) for _ in range(2)]

    a, b, c = labels(1), labels(1), labels(2)
    assert a == b and a != c
    assert sorted(a[0]) == sorted(a[1]) == list(range(10, 16))   # each epoch is a permutation


def test_image_data_bad_input(image_folder):
    folder, _ = image_folder
    (folder / "list.txt").write_text("im0.png 1\nim1.png\n")
    with pytest.raises(LayerSetupError, match="list.txt line 2: 'im1.png' is not 'path label'"):
        image_net(folder)
    (folder / "list.txt").write_text("im0.png 1\nmissing.png 2\n")
    net = image_net(folder, batch=1)
    net.forward()
    with pytest.raises(DataError, match="missing.png"):
        net.forward()


# -- HDF5Data / HDF5Output ---------------------------------------------------------------------
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


# -- MemoryData / DummyData ----------------------------------------------------------------------
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


# -- WindowData -----------------------------------------------------------------------------------
def test_window_data_samples_background_then_foreground(tmp_path, device):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "img.png")
    (tmp_path / "windows.txt").write_text(
        "# 0\nimg.png\n3\n30\n40\n3\n"
        "3 0.9 5 4 20 18\n"      # foreground, class 3
        "2 0.3 0 0 9 9\n"        # between the thresholds: neither
        "1 0.1 10 10 39 29\n")   # background: label forced to 0
    text = f"""layer {{ name: "w" type: "WindowData" top: "data" top: "label"
        window_data_param {{ source: "{tmp_path / 'windows.txt'}" root_folder: "{tmp_path}/"
          batch_size: 4 fg_threshold: 0.5 bg_threshold: 0.2 fg_fraction: 0.5 %s }}
        transform_param {{ crop_size: 8 mean_value: 10 mean_value: 20 mean_value: 30 }} }}"""
    out = make_net(text % "scale: 0.5", device=device).forward()
    assert out["data"].shape == (4, 3, 8, 8)
    assert list(out["label"]) == [0, 0, 3, 3]
    bgr = rgb[:, :, ::-1]
    mean = np.array([10, 20, 30]).reshape(3, 1, 1)
    fg = resize_linear(bgr[4:19, 5:21], 8, 8).transpose(2, 0, 1)
    bg = resize_linear(bgr[10:30, 10:40], 8, 8).transpose(2, 0, 1)
    np.testing.assert_array_equal(out["data"][3], (fg - mean) * 0.5)
    np.testing.assert_array_equal(out["data"][0], (bg - mean) * 0.5)
    padded = make_net(text % 'context_pad: 2 crop_mode: "square"').forward()
    assert padded["data"].shape == (4, 3, 8, 8)
    # The background window, squared and doubled, overhangs the image; the overhang stays 0.
    assert (padded["data"][0, :, 0, :] == 0).all() and (padded["data"][0, :, 2:6, 2:6] != 0).any()


def test_window_data_bad_input(tmp_path):
    (tmp_path / "windows.txt").write_text("# 0\nimg.png\n3\n30\n40\n1\n3 0.9 5 4 20 18\n")
    mean = caffe_pb2.BlobProto(num=1, channels=3, height=4, width=4, data=[0.0] * 48)
    (tmp_path / "mean.binaryproto").write_bytes(mean.SerializeToString())
    text = f"""layer {{ name: "w" type: "WindowData" top: "data" top: "label"
        window_data_param {{ source: "{tmp_path / 'windows.txt'}" batch_size: 2 %s }}
        transform_param {{ crop_size: 8 %s }} }}"""
    with pytest.raises(LayerSetupError, match="no background windows"):
        make_net(text % ("", ""))
    with pytest.raises(LayerSetupError, match="mean_file is 3x4x4 but windows are warped to 3x8x8"):
        make_net(text % ("fg_fraction: 1", f'mean_file: "{tmp_path / "mean.binaryproto"}"'))
    (tmp_path / "windows.txt").write_text("# 0\nimg.png\n3\n30\n")
    with pytest.raises(LayerSetupError, match="ends in the middle of an image size"):
        make_net(text % ("", ""))
