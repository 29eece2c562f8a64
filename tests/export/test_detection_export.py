"""The detection forks' layers in ONNX, through onnxruntime against caffe.Net: Permute,
Normalize, PriorBox (a constant), Faster R-CNN's test-time Dropout scale, and SSD's
DetectionOutput (decode, NonMaxSuppression, TopK), alone and at the end of whole SSD nets.

Detections are compared as sets of rows: each row of the export pairs with one of Caffe's
by image, label and box, scores within 1e-6; rows run by image, label and falling score
(near-equal scores may come in either order: onnxruntime's NMS does not rank ties)."""
import functools
import re

import numpy as np
import pytest

import caffe
from caffe.export import ExportError
from tests import detection_nets
from tests.export.test_layers import make_net
from tests.export.util import assert_close, caffe_forward, fill_weights, random_inputs, \
    run_onnx

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

HEAD = """name: "ssd_head"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "norm" type: "Normalize" bottom: "conv" top: "norm"
  norm_param { across_spatial: %s channel_shared: %s scale_filler { type: "constant" value: 20 } } }
layer { name: "loc" type: "Convolution" bottom: "norm" top: "loc"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "perm" type: "Permute" bottom: "loc" top: "perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "flat" type: "Flatten" bottom: "perm" top: "flat" }
layer { name: "prior" type: "PriorBox" bottom: "norm" bottom: "data" top: "prior"
  prior_box_param { min_size: 4 max_size: 8 flip: true variance: 0.1 variance: 0.1
    variance: 0.2 variance: 0.2 } }
layer { name: "drop" type: "Dropout" bottom: "flat" top: "drop"
  dropout_param { dropout_ratio: 0.25 scale_train: false } }
"""


def net_for(tmp_path, text):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    fill_weights(net)
    return net


def assert_same_detections(got, expected, what="detections"):
    """Rows (image, label, score, xmin, ymin, xmax, ymax) equal as sets, in Caffe's order
    up to near-equal scores."""
    got, expected = (np.asarray(a, np.float64).reshape(-1, 7) for a in (got, expected))
    assert got.shape == expected.shape, f"{what}: {len(got)} rows, Caffe has {len(expected)}"
    keys = got[:, :2]
    assert (np.diff(keys[:, 0]) >= 0).all(), f"{what}: rows not by image"
    same = (np.diff(keys, axis=0) == 0).all(1)
    assert (np.diff(keys[:, 1])[np.diff(keys[:, 0]) == 0] >= 0).all(), \
        f"{what}: rows not by label within an image"
    assert (np.diff(got[:, 2])[same] <= 1e-6).all(), f"{what}: scores rise within a label"
    unmatched = list(range(len(expected)))
    for row in got:
        near = [j for j in unmatched if (expected[j, :2] == row[:2]).all() and
                abs(expected[j, 2] - row[2]) <= 1e-6 and
                np.abs(expected[j, 3:] - row[3:]).max() <= 1e-5 * max(1, np.abs(row[3:]).max())]
        assert near, f"{what}: row {row.round(5).tolist()} is not among Caffe's"
        unmatched.remove(near[0])


@pytest.mark.parametrize("across, shared", [("true", "true"), ("false", "false")])
def test_ssd_head_exports(tmp_path, across, shared):
    net = net_for(tmp_path, HEAD % (across, shared))
    net.params["norm"][0].data[...] = 1 + np.arange(net.params["norm"][0].count)
    feeds = random_inputs(net)
    expected = caffe_forward(net, feeds, ["drop", "prior"])
    got, _ = run_onnx(net, feeds, ["drop", "prior"])
    for name in ("drop", "prior"):
        assert_close(got[name], expected[name], name)


def test_priors_are_exported_before_any_forward(tmp_path):
    net = net_for(tmp_path, HEAD % ("true", "true"))
    got, _ = run_onnx(net, random_inputs(net), ["prior"])
    expected = caffe_forward(net, random_inputs(net), ["prior"])["prior"]
    assert np.abs(expected).max() > 0
    assert_close(got["prior"], expected, "prior")


# -- DetectionOutput alone: loc, conf and priors fed as inputs ---------------------------------
PRIORS, CLASSES = 48, 4


def detection_net(settings, batch=1, loc_classes=1):
    body = ('layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" '
            'bottom: "prior" top: "det" detection_output_param { num_classes: %d %s } }\n'
            % (CLASSES, settings))
    return make_net(body, [(batch, PRIORS * loc_classes * 4), (batch, PRIORS * CLASSES),
                           (1, 2, PRIORS * 4)], names=("loc", "conf", "prior"))


def detection_inputs(batch, loc_classes=1, seed=0, scale=1.0):
    """Priors crowded into a corner of the image (so that many overlap), offsets that move
    them a little (or, for CORNER coding, may turn them inside out), softmax scores."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.3, 0.6, (PRIORS, 2))
    size = rng.uniform(0.1, 0.3, (PRIORS, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
    var = np.tile([0.1, 0.1, 0.2, 0.2], (PRIORS, 1))
    logits = rng.normal(0, 2, (batch, PRIORS, CLASSES))
    conf = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return {"loc": (scale * rng.normal(size=(batch, PRIORS * loc_classes * 4))).astype(np.float32),
            "conf": conf.reshape(batch, -1).astype(np.float32),
            "prior": np.stack([boxes, var]).reshape(1, 2, -1).astype(np.float32)}


DETECTION_CASES = [
    # (settings, batch, loc_classes, loc scale)
    ("code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 top_k: 20 } keep_top_k: 12 "
     "confidence_threshold: 0.05", 1, 1, 1.0),
    ("code_type: CENTER_SIZE nms_param { nms_threshold: 0.3 } confidence_threshold: 0.1", 2, 1,
     1.0),
    ("code_type: CENTER_SIZE nms_param { nms_threshold: 0.5 top_k: 10 } keep_top_k: 7", 2, 1, 1.0),
    ("code_type: CENTER_SIZE share_location: false background_label_id: -1 "
     "nms_param { nms_threshold: 0.4 top_k: 15 } keep_top_k: 20 confidence_threshold: 0.02",
     2, CLASSES, 1.0),
    ("code_type: CORNER nms_param { nms_threshold: 0.45 } confidence_threshold: 0.05", 1, 1, 1.0),
    ("code_type: CORNER_SIZE variance_encoded_in_target: true background_label_id: 2 "
     "nms_param { nms_threshold: 0.6 eta: 1 } keep_top_k: 9", 1, 1, 0.2),
    ("code_type: CENTER_SIZE nms_param { nms_threshold: 0.5 eta: 0.7 top_k: 30 } "
     "confidence_threshold: 0.01", 1, 1, 1.0),      # eta never acts at a threshold <= 0.5
    ("code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 } confidence_threshold: 1.5", 2, 1,
     1.0),                                          # nothing passes: one -1 row per image
    ("code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 top_k: 0 }", 1, 1, 1.0),
]


@pytest.mark.parametrize("settings, batch, loc_classes, scale", DETECTION_CASES)
def test_detection_output_exports(settings, batch, loc_classes, scale):
    net = detection_net(settings, batch, loc_classes)
    feeds = detection_inputs(batch, loc_classes, scale=scale)
    expected = caffe_forward(net, feeds, ["det"])["det"]
    got, model = run_onnx(net, feeds, ["det"])
    assert_same_detections(got["det"], expected)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    assert dims[2].dim_param == "detections"
    # The same graph follows other inputs: its number of rows is not fixed at export.
    again = detection_inputs(batch, loc_classes, seed=1, scale=scale)
    got, _ = run_onnx(net, again, ["det"])
    assert_same_detections(got["det"], caffe_forward(net, again, ["det"])["det"], "seed 1")


def test_corner_coding_keeps_inside_out_boxes_apart():
    # Large CORNER offsets turn many boxes inside out: the fork gives them size 0 (they
    # overlap nothing), which NonMaxSuppression must not undo by sorting their corners.
    net = detection_net("code_type: CORNER nms_param { nms_threshold: 0.3 }")
    feeds = detection_inputs(1, scale=3.0)
    expected = caffe_forward(net, feeds, ["det"])["det"].reshape(-1, 7)
    inverted = (expected[:, 5] < expected[:, 3]) | (expected[:, 6] < expected[:, 4])
    assert inverted.sum() > 5
    got, _ = run_onnx(net, feeds, ["det"])
    assert_same_detections(got["det"], expected)


def test_adaptive_nms_is_refused():
    net = detection_net("code_type: CENTER_SIZE nms_param { nms_threshold: 0.7 eta: 0.9 }")
    with pytest.raises(ExportError, match="'det' \\(type DetectionOutput\\).*eta 0.9"):
        caffe.export.to_onnx(net)


WHOLE_NETS = {"mobilenet_ssd": detection_nets.mobilenet_ssd,
              "ssd300": detection_nets.ssd300_vgg,
              "pelee": functools.partial(detection_nets.pelee, dense=(1, 1, 2, 1))}


@pytest.mark.parametrize("build", WHOLE_NETS.values(), ids=WHOLE_NETS.keys())
def test_whole_ssd_exports(tmp_path, build):
    # Random weights score every class near 1/21: a threshold that lets some through.
    text = re.sub(r"confidence_threshold: [0-9.]+", "confidence_threshold: 0.045", build(width=8))
    net = net_for(tmp_path, text)
    feeds = random_inputs(net)
    expected = caffe_forward(net, feeds, ["detection_out"])["detection_out"]
    assert expected.shape[2] > 10
    got, _ = run_onnx(net, feeds, ["detection_out"])
    assert_same_detections(got["detection_out"], expected)
    import onnx                     # the newest opset too (ops whose inputs moved)
    got, _ = run_onnx(net, feeds, ["detection_out"], opset=onnx.defs.onnx_opset_version())
    assert_same_detections(got["detection_out"], expected, "newest opset")
