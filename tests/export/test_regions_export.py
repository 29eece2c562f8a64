"""The two-stage detectors' region layers in ONNX, through onnxruntime against caffe.Net:
ROIPooling (MaxRoiPool, negative and empty bins included), R-FCN's PSROIPooling, OpenCV's
Proposal, the whole R-FCN test net in OpenCV's form, and the Faster R-CNN test net, whose
Python proposal layer is refused and whose head exports once the proposals are an input."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import caffe
from caffe.export import ExportError
from tests.export.test_layers import layer, make_net
from tests.export.util import assert_close, caffe_forward, run_onnx
from tests.frcnn import zf_net
from tests.test_rfcn_models import rfcn_net

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# (item, x1, y1, x2, y2) in image pixels, 1/4 of the feature map's: ordinary, the whole
# map, inside out (Caffe makes it 1 x 1), partly and wholly past the map (empty bins),
# partly before it, one pixel, and corners at x.5 / 4 (C's rounding of halves away from zero).
ROIS = np.array([[0, 2, 2, 30, 40], [1, 0, 0, 63, 47], [1, 10, 6, 9, 5], [0, 50, 30, 200, 90],
                 [0, 80, 60, 120, 100], [1, -20, -8, 6, 10], [0, 6, 10, 6, 10],
                 [1, 14, 2, 34, 45.9], [0, 18, 10, 42, 26]], np.float32)


def region_inputs(channels, seed=0):
    x = np.random.default_rng(seed).normal(size=(2, channels, 12, 16)).astype(np.float32)
    x[:, 1] = -np.abs(x[:, 1])      # a channel with only negative values
    return {"x": x, "rois": ROIS}


@pytest.mark.parametrize("kind, settings, channels", [
    ("ROIPooling", "roi_pooling_param { pooled_h: 3 pooled_w: 4 spatial_scale: 0.25 }", 3),
    ("ROIPooling", "roi_pooling_param { pooled_h: 7 pooled_w: 7 spatial_scale: 0.25 }", 3),
    ("PSROIPooling", "psroi_pooling_param { spatial_scale: 0.25 output_dim: 2 group_size: 3 }",
     18),
])
def test_region_pooling_exports(kind, settings, channels):
    net = make_net(layer(kind, settings, bottoms=("x", "rois")), [(2, channels, 12, 16),
                                                                  ROIS.shape],
                   names=("x", "rois"))
    feeds = region_inputs(channels)
    expected = caffe_forward(net, feeds, ["y"])["y"]
    assert (expected == 0).all(axis=(1, 2, 3)).any()          # the ROI past the map
    got, _ = run_onnx(net, feeds, ["y"])
    assert_close(got["y"], expected, kind)


@pytest.mark.parametrize("opset", [None, "newest"])
def test_rfcn_test_net_exports_whole(tmp_path, opset):
    import onnx
    opset = onnx.defs.onnx_opset_version() if opset else None
    (tmp_path / "rfcn.prototxt").write_text(rfcn_net())
    caffe.set_random_seed(11)
    net = caffe.Net(str(tmp_path / "rfcn.prototxt"), caffe.TEST)
    rng = np.random.default_rng(0)
    feeds = {"data": rng.uniform(-1, 1, (1, 3, 96, 128)).astype(np.float32),
             "im_info": np.array([[96, 128, 1.0]], np.float32)}
    outputs = ["rois", "cls_prob", "bbox_pred"]
    expected = caffe_forward(net, feeds, outputs)
    assert expected["rois"].any(1).sum() > 5         # proposals, then zero rows
    got, _ = run_onnx(net, feeds, outputs, opset=opset)
    for name in outputs:
        assert_close(got[name], expected[name], name)


def test_proposal_scores_top_exports():
    body = layer("Proposal", "proposal_param { feat_stride: 16 pre_nms_topn: 40 "
                 "post_nms_topn: 30 nms_thresh: 0.5 ratio: 1 scale: 2 scale: 4 }",
                 bottoms=("scores", "deltas", "info"), tops=("rois", "s"))
    net = make_net(body, [(1, 4, 5, 6), (1, 8, 5, 6), (1, 3)], names=("scores", "deltas", "info"))
    rng = np.random.default_rng(3)
    feeds = {"scores": rng.uniform(size=(1, 4, 5, 6)).astype(np.float32),
             "deltas": rng.normal(0, 0.3, (1, 8, 5, 6)).astype(np.float32),
             "info": np.array([[70.5, 90.9, 1]], np.float32)}     # int() of the size, as OpenCV
    expected = caffe_forward(net, feeds, ["rois", "s"])
    assert 3 < expected["rois"].any(1).sum() < 30
    got, _ = run_onnx(net, feeds, ["rois", "s"])
    for name in ("rois", "s"):
        assert_close(got[name], expected[name], name)


PYTHON_PROPOSAL = re.compile(r'layer \{ name: "proposal" type: "Python".*?\} \}\n', re.S)


def test_faster_rcnn_test_net(tmp_path):
    pytest.importorskip("yaml", reason="the proposal layer reads its param_str with PyYAML")
    shutil.copytree(Path(zf_net.__file__).parent / "rpn", tmp_path / "rpn")
    (tmp_path / "test.prototxt").write_text(zf_net.zf_like(64, 80))
    net = caffe.Net(str(tmp_path / "test.prototxt"), caffe.TEST)
    with pytest.raises(ExportError, match="'proposal' \\(type Python\\).*arbitrary code"):
        caffe.export.to_onnx(net)
    # Fast R-CNN's form: the proposals come in as an input; the rest exports.
    text = PYTHON_PROPOSAL.sub('input: "rois" input_shape { dim: 9 dim: 5 }\n',
                               zf_net.zf_like(64, 80))
    assert "Python" not in text
    (tmp_path / "fast.prototxt").write_text(text)
    caffe.set_random_seed(5)
    net = caffe.Net(str(tmp_path / "fast.prototxt"), caffe.TEST)
    rng = np.random.default_rng(0)
    rois = ROIS.copy()
    rois[:, 0] = 0
    feeds = {"data": rng.normal(size=(1, 3, 64, 80)).astype(np.float32),
             "im_info": np.array([[64, 80, 1]], np.float32), "rois": rois * 1.3}
    expected = caffe_forward(net, feeds, ["cls_prob", "bbox_pred"])
    got, _ = run_onnx(net, feeds, ["cls_prob", "bbox_pred"])
    for name in ("cls_prob", "bbox_pred"):
        assert_close(got[name], expected[name], name)
