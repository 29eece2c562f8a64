"""The tools BVLC ships beside `caffe`: convert_mnist_siamese_data, convert_cifar_data,
classify and detect (python/classify.py and python/detect.py as console scripts)."""
import csv
import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe
from caffe.data.db import open_db
from caffe.proto import caffe_pb2
from caffe.tools import classify, convert_cifar_data, convert_mnist_siamese_data, detect
from caffe.tools.caffe import main as caffe_main

ROOT = Path(__file__).resolve().parents[2]


def write_idx(tmp_path, images, labels):
    img = tmp_path / "images-idx3-ubyte.gz"
    lab = tmp_path / "labels-idx1-ubyte"
    n, rows, cols = images.shape
    img.write_bytes(gzip.compress(np.array([2051, n, rows, cols], ">u4").tobytes()
                                  + images.tobytes()))
    lab.write_bytes(np.array([2049, n], ">u4").tobytes() + labels.tobytes())
    return str(img), str(lab)


def records(path, backend):
    with open_db(path, backend) as db:
        out = []
        for key, value in db:
            d = caffe_pb2.Datum()
            d.ParseFromString(value)
            out.append((key.decode() if isinstance(key, bytes) else key, d))
        return out


def test_convert_mnist_siamese_data_pairs(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 4, 5), dtype=np.uint8)
    labels = rng.integers(0, 3, 30, dtype=np.uint8)
    img, lab = write_idx(tmp_path, images, labels)
    out = tmp_path / "siamese_leveldb"
    assert convert_mnist_siamese_data.main([img, lab, str(out), "--seed", "3"]) == 0
    recs = records(out, "leveldb")                    # BVLC writes a LevelDB
    assert [k for k, _ in recs] == [f"{i:08d}" for i in range(30)]
    flat = {images[i].tobytes(): i for i in range(30)}
    same = 0
    for _, d in recs:
        assert (d.channels, d.height, d.width) == (2, 4, 5)
        i, j = flat[d.data[:20]], flat[d.data[20:]]
        assert d.label == int(labels[i] == labels[j])
        same += d.label
    assert 0 < same < 30
    # The same seed draws the same pairs; the database must not exist yet (as BVLC's).
    again = tmp_path / "again"
    convert_mnist_siamese_data.main([img, lab, str(again), "--seed", "3"])
    assert [d.data for _, d in records(again, "leveldb")] == [d.data for _, d in recs]
    assert convert_mnist_siamese_data.main([img, lab, str(out)]) == 1


def test_convert_cifar_data_layout(tmp_path):
    rng = np.random.default_rng(1)
    batches = []
    for name in [f"data_batch_{b}.bin" for b in range(1, 6)] + ["test_batch.bin"]:
        rows = rng.integers(0, 256, (3, 3073), dtype=np.uint8)
        rows[:, 0] = rng.integers(0, 10, 3)
        (tmp_path / name).write_bytes(rows.tobytes())
        batches.append(rows)
    out = tmp_path / "out"
    out.mkdir()
    assert caffe_main(["convert_cifar_data", str(tmp_path), str(out), "lmdb"]) == 0
    train = records(out / "cifar10_train_lmdb", "lmdb")
    assert [k for k, _ in train] == [f"{b * 10000 + i:05d}" for b in range(5) for i in range(3)]
    for (key, d), row in zip(train, [r for b in batches[:5] for r in b]):
        assert (d.channels, d.height, d.width, d.label) == (3, 32, 32, row[0])
        assert d.data == row[1:].tobytes()
    test = records(out / "cifar10_test_lmdb", "lmdb")
    assert [k for k, _ in test] == ["00000", "00001", "00002"]
    assert test[2][1].data == batches[5][2, 1:].tobytes()
    (tmp_path / "test_batch.bin").write_bytes(b"\0" * 100)
    assert convert_cifar_data.main([str(tmp_path), str(tmp_path / "o2"), "lmdb"]) == 1


DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 6 dim: 6 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.002 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.fixture
def tiny_model(tmp_path):
    from PIL import Image
    model = tmp_path / "deploy.prototxt"
    model.write_text(DEPLOY)
    weights = tmp_path / "tiny.caffemodel"
    caffe.Net(str(model), caffe.TEST).save(str(weights))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (9 + k, 11, 3), dtype=np.uint8)).save(
            images / f"im{k}.jpg")
    mean = tmp_path / "mean.npy"
    np.save(mean, rng.random((3, 6, 6)).astype(np.float32) * 100)
    return model, weights, images, mean


def test_classify_matches_bvlc_classify_py(tmp_path, tiny_model):
    """BVLC's python/classify.py run unchanged on this caffe and our console script agree."""
    from tests.test_bvlc_suite import extract_bvlc
    model, weights, images, mean = tiny_model
    flags = ["--model_def", str(model), "--pretrained_model", str(weights), "--images_dim",
             "8,8", "--mean_file", str(mean), "--raw_scale", "200"]
    ours = tmp_path / "ours.npy"
    assert classify.main([str(images), str(ours)] + flags) == 0
    got = np.load(ours)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got.sum(1), 1, rtol=1e-5)
    assert 0.01 < got.min() and got.max() < 0.99      # not saturated: a real comparison
    root = extract_bvlc(tmp_path / "bvlc", ("python/classify.py",))
    theirs = tmp_path / "theirs.npy"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, str(root / "python" / "classify.py"), str(images),
                          str(theirs)] + flags, env=env, capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(got, np.load(theirs), rtol=1e-6)
    # --center_only: one crop per image.
    centre = tmp_path / "centre.npy"
    assert classify.main([str(images / "im0.jpg"), str(centre), "--center_only"] + flags) == 0
    assert np.load(centre).shape == (1, 4)


def test_detect_list_mode_csv_and_h5(tmp_path, tiny_model):
    model, weights, images, mean = tiny_model
    windows = tmp_path / "windows.csv"
    with open(windows, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "xmin", "ymin", "xmax", "ymax"])
        w.writerow([images / "im0.jpg", 0, 0, 5, 4])
        w.writerow([images / "im1.jpg", 2, 1, 9, 8])
        w.writerow([images / "im0.jpg", 3, 3, 10, 8])
    flags = ["--model_def", str(model), "--pretrained_model", str(weights), "--crop_mode",
             "list", "--mean_file", str(mean), "--context_pad", "1"]
    out = tmp_path / "det.csv"
    assert detect.main([str(windows), str(out)] + flags) == 0
    rows = list(csv.DictReader(open(out)))
    assert [r["filename"] for r in rows] == [str(images / n) for n in ("im0.jpg", "im0.jpg",
                                                                       "im1.jpg")]
    assert [float(rows[1][c]) for c in detect.COORD_COLS] == [3, 3, 8, 10]
    probs = np.array([[float(r[f"class{k}"]) for k in range(4)] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    # The same windows through the Detector directly.
    det = caffe.Detector(str(model), str(weights), mean=np.load(mean).mean(1).mean(1),
                         raw_scale=255.0, channel_swap=[2, 1, 0], context_pad=1)
    direct = det.detect_windows(detect.read_windows(str(windows)))
    np.testing.assert_allclose(probs, [d["prediction"] for d in direct], rtol=1e-5)
    import h5py
    h5 = tmp_path / "det.h5"
    assert detect.main([str(windows), str(h5)] + flags) == 0
    with h5py.File(h5) as f:
        np.testing.assert_allclose(f["prediction"][:], probs, rtol=1e-5)
        assert f["window"].shape == (3, 4)
    assert detect.main([str(tmp_path / "x.json"), str(h5)] + flags) == 1
