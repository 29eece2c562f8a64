"""create_annoset (VOC XML / JSON -> LMDB of AnnotatedDatum) and the AnnotatedData layer."""
import json

import numpy as np
import pytest
from PIL import Image

import caffe
from caffe.data.db import open_db
from caffe.proto import caffe_pb2
from caffe.tools import create_annoset

LABELMAP = """item { name: "none_of_the_above" label: 0 display_name: "background" }
item { name: "cat" label: 1 display_name: "cat" }
item { name: "dog" label: 2 display_name: "dog" }
"""
BOXES = [[("cat", 0, 4, 6, 20, 30)], [("dog", 1, 10, 2, 38, 22), ("cat", 0, 0, 0, 8, 8)],
         [("dog", 0, 1, 1, 30, 30)]]


def voc_xml(width, height, objects):
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height>"
             f"<depth>3</depth></size>"]
    for name, difficult, x0, y0, x1, y1 in objects:
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                     f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
                     f"</bndbox></object>")
    return "".join(parts) + "</annotation>"


@pytest.fixture
def annoset(tmp_path):
    rng = np.random.RandomState(0)
    lines = []
    for i, objects in enumerate(BOXES):
        Image.fromarray(rng.randint(0, 256, (32, 40, 3)).astype(np.uint8)).save(
            tmp_path / f"{i}.png")
        (tmp_path / f"{i}.xml").write_text(voc_xml(40, 32, objects))
        lines.append(f"{i}.png {i}.xml")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "labelmap.prototxt").write_text(LABELMAP)
    status = create_annoset.main([str(tmp_path) + "/", str(tmp_path / "list.txt"),
                                  str(tmp_path / "db"), "--encoded", "--label_map_file",
                                  str(tmp_path / "labelmap.prototxt")])
    assert status in (0, None)
    return tmp_path


def test_records(annoset):
    with open_db(str(annoset / "db"), "lmdb") as db:
        records = list(db.cursor())
    assert [k.decode() if isinstance(k, bytes) else k for k, _ in records][0] == "00000000_0.png"
    second = caffe_pb2.AnnotatedDatum.FromString(records[1][1])
    assert second.datum.encoded and second.type == caffe_pb2.AnnotatedDatum.BBOX
    assert [g.group_label for g in second.annotation_group] == [2, 1]
    box = second.annotation_group[0].annotation[0].bbox
    assert (box.xmin, box.ymin, box.difficult) == (pytest.approx(10 / 40), pytest.approx(2 / 32),
                                                   True)


def test_json_annotations(tmp_path):
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "a.json").write_text(json.dumps({
        "image": {"width": 20, "height": 10},
        "annotation": [{"bbox": [2, 1, 10, 5], "category_id": 3, "iscrowd": 0}]}))
    (tmp_path / "list.txt").write_text("a.jpg a.json\n")
    create_annoset.main([str(tmp_path) + "/", str(tmp_path / "list.txt"), str(tmp_path / "db"),
                         "--label_type", "json"])
    with open_db(str(tmp_path / "db"), "lmdb") as db:
        record = caffe_pb2.AnnotatedDatum.FromString(next(db.cursor())[1])
    bbox = record.annotation_group[0].annotation[0].bbox
    assert record.annotation_group[0].group_label == 3
    assert (bbox.xmin, bbox.xmax, bbox.ymax) == pytest.approx((0.1, 0.6, 0.6))


def data_net(folder, phase, transform=""):
    text = f"""name: "annotated"
layer {{ name: "data" type: "AnnotatedData" top: "data" top: "label"
  include {{ phase: {phase} }}
  data_param {{ source: "{folder / 'db'}" batch_size: 3 backend: LMDB }}
  transform_param {{ mean_value: 104 mean_value: 117 mean_value: 123
    resize_param {{ prob: 1 resize_mode: WARP height: 24 width: 24 interp_mode: LINEAR }}
    {transform} }}
  annotated_data_param {{ label_map_file: "{folder / 'labelmap.prototxt'}"
    batch_sampler {{ max_sample: 1 max_trials: 1 }}
    batch_sampler {{ sampler {{ min_scale: 0.3 max_scale: 1 min_aspect_ratio: 0.5
      max_aspect_ratio: 2 }} sample_constraint {{ min_jaccard_overlap: 0.3 }}
      max_sample: 1 max_trials: 50 }} }} }}
"""
    path = folder / f"{phase}.prototxt"
    path.write_text(text)
    return caffe.Net(str(path), caffe.TRAIN if phase == "TRAIN" else caffe.TEST)


def test_annotated_data_test_phase(annoset):
    net = data_net(annoset, "TEST")
    net.forward()
    assert net.blobs["data"].data.shape == (3, 3, 24, 24)
    rows = net.blobs["label"].data.reshape(-1, 8)
    expect = [[i, {"cat": 1, "dog": 2}[n], 0, x0 / 40, y0 / 32, x1 / 40, y1 / 32, d]
              for i, objects in enumerate(BOXES)
              for n, d, x0, y0, x1, y1 in sorted(objects, key=lambda o: o[0] != objects[0][0])]
    np.testing.assert_allclose(sorted(map(list, rows)), sorted(expect), atol=1e-6)


def test_annotated_data_train_augments(annoset):
    net = data_net(annoset, "TRAIN", "mirror: true distort_param { brightness_prob: 0.5 "
                   "brightness_delta: 32 contrast_prob: 0.5 contrast_lower: 0.5 "
                   "contrast_upper: 1.5 } expand_param { prob: 0.5 max_expand_ratio: 2 } "
                   "emit_constraint { emit_type: CENTER }")
    for _ in range(4):
        net.forward()
        rows = net.blobs["label"].data.reshape(-1, 8)
        assert net.blobs["data"].data.shape == (3, 3, 24, 24)
        boxes = rows[rows[:, 0] >= 0, 3:7]
        assert ((boxes >= 0) & (boxes <= 1)).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
