"""The data tools against the reference's own outputs, with BVLC's flag spellings."""
import logging
import shutil

import numpy as np
from PIL import Image

import caffe
from caffe import formats
from caffe.data import datum_to_array, open_db, parse_datum
from caffe.tools.gflags import gflags_argv
from caffe.proto import caffe_pb2
from caffe.tools import (compute_image_mean, convert_imageset, convert_mnist_data,
                         extract_features, upgrade_tools)
from tests.conftest import shared_path


def records(path, backend="lmdb"):
    with open_db(path, backend) as db:
        return list(db)


def test_gflags_spellings():
    argv = ["-gray", "--shuffle=false", "-backend", "leveldb", "--resize_height=20",
            "-nocheck_size", "-logtostderr=1", "-h", "-1", "root/", "--", "-x"]
    assert gflags_argv(argv, ["gray", "shuffle", "check_size"]) == [
        "--gray=true", "--shuffle=false", "--backend", "leveldb", "--resize_height=20",
        "--check_size=false", "--logtostderr=1", "-h", "-1", "root/", "--", "-x"]


# -- compute_image_mean ---------------------------------------------------------------------------
def test_compute_image_mean_equals_the_reference(tmp_path):
    formats_dir = shared_path("golden", "formats")
    out = tmp_path / "mean.binaryproto"
    assert compute_image_mean.main([str(formats_dir / "small_raw_lmdb"), str(out),
                                    "-backend", "lmdb"]) == 0
    assert out.read_bytes() == (formats_dir / "small_mean.binaryproto").read_bytes()
    ldb = shutil.copytree(formats_dir / "small_raw_leveldb", tmp_path / "ldb")
    np.testing.assert_array_equal(compute_image_mean.compute_mean(ldb, "leveldb"),
                                  compute_image_mean.compute_mean(
                                      formats_dir / "small_png_lmdb", "lmdb"))


def test_compute_image_mean_missing_database(tmp_path, caplog):
    assert compute_image_mean.main([str(tmp_path / "nope")]) == 1
    assert "does not exist" in caplog.text


# -- convert_imageset -----------------------------------------------------------------------------
def test_convert_imageset_reproduces_the_reference_databases(tmp_path):
    f = shared_path("golden", "formats")
    root, listing = f"{f}/", str(f / "small.txt")
    assert convert_imageset.main(["--gray", root, listing, str(tmp_path / "raw")]) == 0
    assert records(tmp_path / "raw") == records(f / "small_raw_lmdb")        # byte-identical
    assert convert_imageset.main(["-gray", "-encoded=true", "-backend", "lmdb", root, listing,
                                  str(tmp_path / "png")]) == 0
    assert records(tmp_path / "png") == records(f / "small_png_lmdb")
    assert convert_imageset.main(["-gray", "--shuffle", "--seed=3", "--resize_height=20",
                                  "-resize_width", "24", "-backend=leveldb", root, listing,
                                  str(tmp_path / "resized")]) == 0
    gold = shutil.copytree(f / "small_resized_leveldb", tmp_path / "gold")
    mine = records(tmp_path / "resized", "leveldb")
    by_path = (lambda recs: {k.split(b"_", 1)[1]: v for k, v in recs})
    assert by_path(mine) == by_path(records(gold, "leveldb"))
    assert [k.split(b"_", 1)[0] for k, _ in mine] == [b"%08d" % i for i in range(64)]
    assert [k for k, _ in mine] != [k for k, _ in records(tmp_path / "raw")]   # shuffled


def test_convert_imageset_shuffle_is_reproducible_with_a_seed(tmp_path):
    f = shared_path("golden", "formats")
    for name in ("a", "b"):
        convert_imageset.main(["--gray", "--shuffle", "--seed", "9", f"{f}/", str(f / "small.txt"),
                               str(tmp_path / name)])
    assert records(tmp_path / "a") == records(tmp_path / "b")


def write_images(tmp_path, n=3):
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")


def test_convert_imageset_skips_unreadable_images(tmp_path, caplog):
    write_images(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"junk")
    (tmp_path / "list.txt").write_text("0.png 0\nbad.png 1\nmissing.png 2\n2.png 3\n")
    db = str(tmp_path / "db")
    with caplog.at_level(logging.WARNING, logger="caffe"):
        assert convert_imageset.main([f"{tmp_path}/", str(tmp_path / "list.txt"), db]) == 0
    assert "bad.png" in caplog.text and "missing.png" in caplog.text
    assert "2 of 4 images could not be read and were skipped" in caplog.text
    recs = records(db)
    assert [k for k, _ in recs] == [b"00000000_0.png", b"00000003_2.png"]
    datum = parse_datum(recs[1][1])
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 6, 5, 3)
    rgb = np.asarray(Image.open(tmp_path / "2.png"))
    np.testing.assert_array_equal(datum_to_array(datum), rgb[:, :, ::-1].transpose(2, 0, 1))


def test_convert_imageset_bad_input(tmp_path, caplog):
    write_images(tmp_path, 2)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "list.txt").write_text("0.png 0\n1.png\n")
    assert convert_imageset.main([f"{tmp_path}/", str(tmp_path / "list.txt"),
                                  str(tmp_path / "a")]) == 1
    assert "list.txt line 2: '1.png' is not 'path label'" in caplog.text
    (tmp_path / "list.txt").write_text("0.png 0\nsmall.png 1\n")
    assert convert_imageset.main(["--check_size", f"{tmp_path}/", str(tmp_path / "list.txt"),
                                  str(tmp_path / "b")]) == 1
    assert "incorrect data field size 48" in caplog.text
    (tmp_path / "list.txt").write_text("none.png 0\n")
    assert convert_imageset.main([str(tmp_path), str(tmp_path / "list.txt"),
                                  str(tmp_path / "c")]) == 1
    assert "has no trailing '/'" in caplog.text


def test_convert_imageset_encodes_in_another_format(tmp_path):
    write_images(tmp_path, 1)
    (tmp_path / "list.txt").write_text("0.png 4\n")
    assert convert_imageset.main(["--encode_type=jpg", "--resize_height=3", "--resize_width=3",
                                  f"{tmp_path}/", str(tmp_path / "list.txt"),
                                  str(tmp_path / "db")]) == 0
    datum = parse_datum(records(tmp_path / "db")[0][1])
    assert datum.encoded and datum.data[:2] == b"\xff\xd8" and datum.label == 4
    assert datum_to_array(datum).shape == (3, 3, 3)


# -- convert_mnist_data ---------------------------------------------------------------------------
def test_build_mnist_lmdbs_for_the_reference_lenet_run(tmp_path):
    mnist = shared_path("data", "mnist")
    run = shared_path("golden", "formats", "bvlc_lenet_run")
    train, test = convert_mnist_data.build_mnist_lmdbs(mnist, tmp_path)
    train_records, test_records = records(train), records(test)
    assert len(train_records) == 8000 and len(test_records) == 2000
    assert train_records[0][0] == b"00000000" and test_records[-1][0] == b"00001999"
    first = parse_datum(train_records[0][1])
    assert (first.channels, first.height, first.width, first.label) == (1, 28, 28, 7)
    # The reference's mean of its training LMDB: same images, same order of summation.
    assert compute_image_mean.main([str(train), str(tmp_path / "mean.binaryproto")]) == 0
    assert (tmp_path / "mean.binaryproto").read_bytes() == (run / "mean.binaryproto").read_bytes()
    images, labels = convert_mnist_data.read_idx(mnist / "t10k-images-idx3-ubyte.gz",
                                                 mnist / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(datum_to_array(parse_datum(test_records[5][1]))[0],
                                  images[8005])


def test_convert_mnist_data_cli_slice_and_errors(tmp_path, caplog):
    mnist = shared_path("data", "mnist")
    images = str(mnist / "t10k-images-idx3-ubyte.gz")
    labels = str(mnist / "t10k-labels-idx1-ubyte.gz")
    assert convert_mnist_data.main([images, labels, str(tmp_path / "db"), "--backend=leveldb",
                                    "-first_item", "10", "-num_items", "5"]) == 0
    recs = records(tmp_path / "db", "leveldb")
    assert [k for k, _ in recs] == [b"%08d" % i for i in range(5)]
    assert convert_mnist_data.main([labels, images, str(tmp_path / "x")]) == 1
    assert "incorrect image file magic" in caplog.text


# -- extract_features -----------------------------------------------------------------------------
def test_extract_features_saves_blobs_as_float_datums(tmp_path):
    f = shared_path("golden", "formats")
    proto = tmp_path / "net.prototxt"
    proto.write_text(f"""layer {{ name: "d" type: "Data" top: "data" top: "label"
        data_param {{ source: "{f / 'small_raw_lmdb'}" backend: LMDB batch_size: 8 }}
        transform_param {{ scale: 0.5 }} }}""")
    weights = tmp_path / "w.caffemodel"
    caffe.Net(str(proto), caffe.TEST).save(str(weights))
    assert extract_features.main([str(weights), str(proto), "data,label",
                                  f"{tmp_path / 'data_db'},{tmp_path / 'label_db'}", "3", "lmdb",
                                  "CPU"]) == 0
    data, label = records(tmp_path / "data_db"), records(tmp_path / "label_db")
    assert [k for k, _ in data] == [b"%010d" % i for i in range(24)]
    raw = records(f / "small_raw_lmdb")
    for (_, value), (_, ref), (_, lab) in zip(data, raw, label):
        datum, ref = parse_datum(value), parse_datum(ref)
        assert (datum.channels, datum.height, datum.width) == (1, 28, 28)
        np.testing.assert_array_equal(datum_to_array(datum), datum_to_array(ref) * 0.5)
        assert list(parse_datum(lab).float_data) == [ref.label]


def test_extract_features_unknown_blob(tmp_path, caplog):
    f = shared_path("golden", "formats")
    proto = tmp_path / "net.prototxt"
    proto.write_text(f"""layer {{ name: "d" type: "Data" top: "data"
        data_param {{ source: "{f / 'small_raw_lmdb'}" backend: LMDB batch_size: 2 }} }}""")
    weights = tmp_path / "w.caffemodel"
    caffe.Net(str(proto), caffe.TEST).save(str(weights))
    assert extract_features.main([str(weights), str(proto), "fc7", str(tmp_path / "o"), "1",
                                  "lmdb"]) == 1
    assert "unknown feature blob name 'fc7'" in caplog.text


# -- upgrade tools --------------------------------------------------------------------------------
def test_upgrade_net_proto_binary_turns_v1_weights_into_v2(tmp_path):
    f = shared_path("golden", "formats")
    out = tmp_path / "up.caffemodel"
    assert upgrade_tools.upgrade_net_proto_binary([str(f / "lenet_v1.caffemodel"), str(out)]) == 0
    up = formats.read_binary_proto(out, caffe_pb2.NetParameter())
    ref = formats.read_binary_proto(f / "lenet_v2.caffemodel", caffe_pb2.NetParameter())
    assert not len(up.layers) and len(up.layer) >= 4
    weights = {l.name: [list(x.data) for x in l.blobs] for l in ref.layer if len(l.blobs)}
    assert {l.name: [list(x.data) for x in l.blobs] for l in up.layer if len(l.blobs)} == weights
    assert {l.name: l.type for l in up.layer} == {l.name: l.type for l in ref.layer
                                                  if l.name in {m.name for m in up.layer}}


def test_upgrade_net_proto_text_and_solver(tmp_path, caplog):
    v1 = tmp_path / "v1.prototxt"
    v1.write_text('name: "n" layers { name: "c" type: CONVOLUTION bottom: "x" top: "y" '
                  'blobs_lr: 1 blobs_lr: 2 convolution_param { num_output: 2 kernel_size: 3 } }')
    out = tmp_path / "v2.prototxt"
    assert upgrade_tools.upgrade_net_proto_text([str(v1), str(out)]) == 0
    net = formats.read_text_proto(out, caffe_pb2.NetParameter())
    assert net.layer[0].type == "Convolution" and [p.lr_mult for p in net.layer[0].param] == [1, 2]
    assert upgrade_tools.upgrade_net_proto_text([str(out), str(tmp_path / "again")]) == 0
    assert "already in latest proto format" in caplog.text
    solver = tmp_path / "solver.prototxt"
    solver.write_text('base_lr: 0.1 solver_type: ADAM net: "n.prototxt"')
    assert upgrade_tools.upgrade_solver_proto_text([str(solver), str(tmp_path / "s2")]) == 0
    upgraded = formats.read_text_proto(tmp_path / "s2", caffe_pb2.SolverParameter())
    assert upgraded.type == "Adam" and not upgraded.HasField("solver_type")
    (tmp_path / "junk").write_text("layers { type: NOT_A_TYPE")
    assert upgrade_tools.upgrade_net_proto_text([str(tmp_path / "junk"), str(out)]) == 2
