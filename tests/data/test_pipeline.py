"""The threaded data pipeline gives the batches of the one-thread loop, record by record.

The oracle below is the data layers' loop as it was before caffe.data.pipeline: read the records
in order, decode each to a contiguous C x H x W array, then let the DataTransformer crop, mirror
and subtract the mean image after image. The layers (through caffe.Net, with their prefetch
thread and several decode threads) must give the same data, labels, crop corners and mirror
flags for the same seed, for LMDB and LevelDB, encoded and raw Datums, and ImageData lists;
a bad record must still raise the error naming it.
"""
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import caffe
from caffe.data import DataError, array_to_datum, open_db
from caffe.data.db import datum_to_array, image_to_datum, parse_datum
from caffe.data.image import encode_image, hwc_to_chw, read_image
from caffe.data.transformer import DataTransformer, draw_seed
from caffe.formats import parse_text
from caffe.proto import caffe_pb2

SEED = 7


@pytest.fixture(autouse=True)
def three_decode_threads(monkeypatch):
    # More threads than these machines have cores: every batch is split into chunks.
    monkeypatch.setenv("CAFFE_DATA_THREADS", "3")


@pytest.fixture
def draws(monkeypatch):
    """Every (corner, mirror) the transformers draw, in draw order, per thread."""
    seen = {}
    original = DataTransformer.draw

    def draw(self, size):
        result = original(self, size)
        seen.setdefault(threading.current_thread().name.split()[0], []).append(result)
        return result

    monkeypatch.setattr(DataTransformer, "draw", draw)
    return seen


def picture(rng, h, w, c=3):
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


def write_db(path, backend, datums):
    with open_db(path, backend, "new") as db:
        for i, datum in enumerate(datums):
            db.put(f"{i:08d}", datum.SerializeToString())


def transform_param(text):
    return parse_text(text, caffe_pb2.TransformationParameter())


def oracle_db(path, backend, transform, batch, batches, phase, color=None):
    """Batches as the one-thread loop made them (wrapping around at the end)."""
    caffe.set_random_seed(SEED)
    t = DataTransformer(transform_param(transform), phase, seed=draw_seed())
    t.color = color if color is not None else t.color
    with open_db(path, backend) as db:
        records = list(db.cursor())
    out, k = [], 0
    for _ in range(batches):
        images, labels, names = [], [], []
        for _ in range(batch):
            key, value = records[k % len(records)]
            k += 1
            datum = parse_datum(value, key)
            images.append(datum_to_array(datum, key, t.color))
            labels.append(datum.label)
            names.append(f"record '{key.decode()}'")
        if not t.needs_rand and all(i.shape == images[0].shape for i in images):
            images = np.stack(images)
        out.append((t(images, names), np.asarray(labels, np.float32)))
    return out


def layer_batches(text, phase, batches, fallbacks=0):
    """The layer's batches; `fallbacks`: how many may take the transformer's own path (prefetch
    0 only: the source is then reachable)."""
    caffe.set_random_seed(SEED)
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), phase)
    out = []
    for _ in range(batches):
        net.forward()
        out.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
    prefetcher = net.layers[0]._layer.prefetcher
    if prefetcher.count == 0:
        got = prefetcher._source.pipeline.fallbacks
        assert got == fallbacks if fallbacks == 0 else got >= fallbacks
    return out


def data_layer(path, backend, transform, batch, prefetch=0, extra=""):
    return f"""layer {{ name: "d" type: "Data" top: "data" top: "label"
        data_param {{ source: "{path}" backend: {backend} batch_size: {batch}
                      prefetch: {prefetch} {extra} }}
        transform_param {{ {transform} }} }}"""


def assert_same(new, old):
    assert len(new) == len(old)
    for (data, label), (want, want_label) in zip(new, old):
        assert data.dtype == want.dtype and data.shape == want.shape
        for i in range(len(want)):              # record by record, for a readable failure
            assert np.array_equal(data[i], want[i]), f"record {i} differs"
        assert np.array_equal(label, want_label)


def mean_file(tmp_path, shape):
    mean = np.random.default_rng(1).uniform(0, 255, (1,) + shape).astype(np.float32)
    path = tmp_path / "mean.binaryproto"
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(mean.shape)
    blob.data.extend(mean.ravel().tolist())
    path.write_bytes(blob.SerializeToString())
    return path


CASES = {
    # name: (backend, encoded, transform, phase)
    "lmdb-jpeg-train": ("lmdb", "jpg", "crop_size: 20 mirror: true mean_file: '{mean}'",
                        caffe.TRAIN),
    "leveldb-raw-train": ("leveldb", None, "crop_size: 17 mirror: true mean_value: 100 "
                          "mean_value: 120 mean_value: 90 scale: 0.5", caffe.TRAIN),
    "lmdb-png-test": ("lmdb", "png", "crop_size: 20 mean_file: '{mean}'", caffe.TEST),
    "leveldb-jpeg-mirror-only": ("leveldb", "jpg", "mirror: true scale: 0.0078125",
                                 caffe.TRAIN),
    "lmdb-raw-no-transform": ("lmdb", None, "", caffe.TRAIN),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_data_layer_batches_equal_the_one_thread_loop(case, tmp_path, draws):
    backend, encoded, transform, phase = CASES[case]
    rng = np.random.default_rng(0)
    datums = []
    for i in range(23):                         # 23 records: batches wrap around mid-batch
        img = picture(rng, 24, 26)
        datums.append(image_to_datum(img, i, encode_image(img, encoded) if encoded else None))
    path = str(tmp_path / "db")
    write_db(path, backend, datums)
    transform = transform.format(mean=mean_file(tmp_path, (3, 24, 26)))
    old = oracle_db(path, backend, transform, 16, 5, phase)
    old_draws = draws.pop("MainThread", [])
    new = layer_batches(data_layer(path, backend.upper(), transform, 16), phase, 5)
    assert_same(new, old)
    # Crop corners and mirror flags: the same, drawn in the same order (without randomness
    # the one-thread loop transformed the batch in one pass and drew nothing).
    new_draws = draws.pop("MainThread", [])
    if old_draws:
        assert new_draws == old_draws
    else:
        centre = ((24 - 20) // 2, (26 - 20) // 2) if "crop" in transform else (0, 0)
        assert set(new_draws) == {(centre, False)}
    # With the prefetch thread (4 batches ahead) the batches are the same too.
    threaded = layer_batches(data_layer(path, backend.upper(), transform, 16, prefetch=4),
                             phase, 5)
    assert_same(threaded, old)
    if old_draws:
        assert draws["prefetch"][:len(old_draws)] == old_draws


def test_images_of_different_sizes_take_the_transformer_path(tmp_path):
    # The draws are made for the expected size; a record of another size puts them back.
    rng = np.random.default_rng(3)
    sizes = [(24, 26)] * 9 + [(30, 22), (24, 26), (28, 28)] + [(24, 26)] * 8
    datums = [image_to_datum(picture(rng, h, w), i, encode_image(picture(rng, h, w), "png"))
              for i, (h, w) in enumerate(sizes)]
    path = str(tmp_path / "db")
    write_db(path, "lmdb", datums)
    transform = "crop_size: 20 mirror: true mean_value: 128"
    old = oracle_db(path, "lmdb", transform, 8, 6, caffe.TRAIN)
    new = layer_batches(data_layer(path, "LMDB", transform, 8), caffe.TRAIN, 6, fallbacks=2)
    assert_same(new, old)


def test_float_datums(tmp_path):
    rng = np.random.default_rng(4)
    datums = [array_to_datum(rng.normal(size=(2, 9, 9)).astype(np.float32), i)
              for i in range(10)]
    path = str(tmp_path / "db")
    write_db(path, "lmdb", datums)
    transform = "crop_size: 7 mirror: true scale: 2"
    old = oracle_db(path, "lmdb", transform, 8, 3, caffe.TRAIN)
    assert_same(layer_batches(data_layer(path, "LMDB", transform, 8), caffe.TRAIN, 3), old)


def test_force_encoded_color_decodes_grey_jpegs_as_bgr(tmp_path):
    rng = np.random.default_rng(5)
    datums = [image_to_datum(None, i, encode_image(picture(rng, 20, 20, 1), "jpg"))
              for i in range(12)]
    path = str(tmp_path / "db")
    write_db(path, "lmdb", datums)
    transform = "crop_size: 16 mirror: true"
    old = oracle_db(path, "lmdb", transform, 8, 3, caffe.TRAIN, color=True)
    new = layer_batches(data_layer(path, "LMDB", transform, 8, extra="force_encoded_color: "
                                   "true"), caffe.TRAIN, 3)
    assert new[0][0].shape[1] == 3
    assert_same(new, old)


def test_corrupt_record_gives_the_error_naming_it(tmp_path):
    rng = np.random.default_rng(6)
    datums = [image_to_datum(None, i, encode_image(picture(rng, 20, 20), "jpg"))
              for i in range(20)]
    datums[13].data = b"\xff\xd8 not a jpeg"
    path = str(tmp_path / "db")
    write_db(path, "lmdb", datums)
    with pytest.raises(DataError) as today:
        datum_to_array(datums[13], b"00000013", None)
    net = caffe.Net(parse_text(data_layer(path, "LMDB", "crop_size: 16 mirror: true", 8),
                               caffe_pb2.NetParameter()), caffe.TRAIN)
    net.forward()
    with pytest.raises(DataError) as new:
        net.forward()
    assert str(new.value) == f"layer 'd' (Data): {today.value}"
    assert "record '00000013'" in str(new.value)


def test_first_bad_record_in_batch_order_is_the_one_named(tmp_path):
    rng = np.random.default_rng(6)
    datums = [image_to_datum(None, i, encode_image(picture(rng, 20, 20), "jpg"))
              for i in range(16)]
    for i in (5, 14):                           # in different threads' chunks
        datums[i].data = b"garbage"
    path = str(tmp_path / "db")
    write_db(path, "lmdb", datums)
    net = caffe.Net(parse_text(data_layer(path, "LMDB", "", 16), caffe_pb2.NetParameter()),
                    caffe.TRAIN)
    with pytest.raises(DataError, match="record '00000005'"):
        net.forward()


# -- ImageData ---------------------------------------------------------------------------------
def image_list(tmp_path, sizes):
    rng = np.random.default_rng(8)
    lines = []
    for i, (h, w) in enumerate(sizes):
        name = f"im{i}.png" if i % 2 else f"im{i}.jpg"
        rgb = picture(rng, h, w)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG" if i % 2 else "JPEG", quality=90)
        (tmp_path / name).write_bytes(buf.getvalue())
        lines.append(f"{name} {i}\n")
    (tmp_path / "list.txt").write_text("".join(lines))
    return tmp_path / "list.txt"


def oracle_images(tmp_path, listing, transform, batch, batches, shuffle, new_size=(0, 0)):
    """ImageData's one-thread loop: list order (reshuffled each epoch), read, transform."""
    caffe.set_random_seed(SEED)
    t = DataTransformer(transform_param(transform), caffe.TRAIN, seed=draw_seed())
    lines = [(p, int(label)) for p, label in (ln.split() for ln in open(listing))]
    rng = np.random.default_rng(draw_seed()) if shuffle else None
    if rng is not None:
        lines = [lines[i] for i in rng.permutation(len(lines))]
    out, index = [], 0
    for _ in range(batches):
        images, labels, names = [], [], []
        for _ in range(batch):
            path, label = lines[index]
            full = f"{tmp_path}/{path}"
            images.append(hwc_to_chw(read_image(full, *new_size, True)))
            labels.append(label)
            names.append(f"image '{full}'")
            index += 1
            if index == len(lines):
                index = 0
                if rng is not None:
                    lines = [lines[i] for i in rng.permutation(len(lines))]
        if not t.needs_rand and all(i.shape == images[0].shape for i in images):
            images = np.stack(images)
        out.append((t(images, names), np.asarray(labels, np.float32)))
    return out


@pytest.mark.parametrize("shuffle,sizes,new_size", [
    (True, [(24, 26)] * 11, (0, 0)),
    (False, [(24, 26), (30, 22), (26, 26)] * 4, (0, 0)),
    (True, [(24, 26), (30, 22), (26, 26)] * 4, (21, 23)),
])
def test_image_data_batches_equal_the_one_thread_loop(tmp_path, shuffle, sizes, new_size):
    listing = image_list(tmp_path, sizes)
    transform = "crop_size: 20 mirror: true mean_value: 110"
    old = oracle_images(tmp_path, listing, transform, 8, 4, shuffle, new_size)
    resize = f"new_height: {new_size[0]} new_width: {new_size[1]}" if new_size[0] else ""
    text = f"""layer {{ name: "d" type: "ImageData" top: "data" top: "label"
        image_data_param {{ source: "{listing}" root_folder: "{tmp_path}/" batch_size: 8
                            shuffle: {str(shuffle).lower()} {resize} }}
        transform_param {{ {transform} }} }}"""
    assert_same(layer_batches(text, caffe.TRAIN, 4, fallbacks=len(set(sizes)) > 1), old)


def test_pinned_batches_for_a_gpu_are_the_same_tensors(tmp_path):
    # The GPU path (page-locked batches, asynchronous copy) on the CPU: only where pinning works.
    if not torch.cuda.is_available():
        pytest.skip("pinned memory needs CUDA")
    from caffe.data.pipeline import BatchPipeline, read_datum
    rng = np.random.default_rng(9)
    datums = [image_to_datum(picture(rng, 24, 26), i) for i in range(16)]
    records = [(f"{i:08d}".encode(), d.SerializeToString()) for i, d in enumerate(datums)]
    param = transform_param("crop_size: 20 mirror: true")
    plain = BatchPipeline(DataTransformer(param, caffe.TRAIN, seed=1), threads=2)
    pinned = BatchPipeline(DataTransformer(param, caffe.TRAIN, seed=1), threads=2, pin=True)
    for _ in range(2):
        want, _ = plain.run(records, read_datum(plain.transformer))
        got, _ = pinned.run(records, read_datum(pinned.transformer))
        assert got.is_pinned() and np.array_equal(got.numpy(), want)
