"""A Faster R-CNN test net in the shape of py-faster-rcnn's ZF `test.prototxt`, reduced.

Its region proposals come from a Python layer `rpn.proposal_layer.ProposalLayer` of
py-faster-rcnn's interface (tests/frcnn/rpn: ours, theirs is Python 2): the number of
proposals, so the batch of ROIPooling and of the fully connected head, changes from image to
image, and the net must reshape down the line on every forward, as Caffe's does.
"""
import shutil
from pathlib import Path

import numpy as np
import pytest

import caffe
from tests.frcnn.zf_net import (FEAT_STRIDE, GOLDEN, assert_equals_recorded_golden,
                                zf_like)

pytest.importorskip("yaml", reason="the proposal layer reads its param_str with PyYAML")
HERE = Path(__file__).parent


@pytest.fixture
def net(tmp_path):
    # pycaffe finds Python-layer modules beside the prototxt, as users keep them.
    shutil.copytree(HERE / "rpn", tmp_path / "rpn")
    (tmp_path / "test.prototxt").write_text(zf_like())
    caffe.set_random_seed(5)
    return caffe.Net(str(tmp_path / "test.prototxt"), caffe.TEST)


def detect(net, seed, height=96, width=128):
    rng = np.random.default_rng(seed)
    net.blobs["data"].reshape(1, 3, height, width)
    out = net.forward(data=rng.normal(size=(1, 3, height, width)).astype(np.float32),
                      im_info=np.array([[height, width, 1.0]], np.float32))
    return net.blobs["rois"].data.copy(), out["cls_prob"].copy(), \
        net.blobs["bbox_pred"].data.copy()


def test_proposals_flow_through_roi_pooling_and_the_head(net):
    rois, prob, deltas = detect(net, 0)
    n = len(rois)
    assert 0 < n <= 300 and rois.shape == (n, 5)
    assert prob.shape == (n, 21) and deltas.shape == (n, 84)
    assert np.allclose(prob.sum(1), 1, atol=1e-5)
    assert (rois[:, 0] == 0).all() and (rois[:, 1:] >= 0).all()
    assert (rois[:, [1, 3]] <= 127).all() and (rois[:, [2, 4]] <= 95).all()
    assert net.blobs["roi_pool_conv3"].data.shape == (n, 16, 3, 3)


def test_the_number_of_proposals_changes_and_the_net_follows(net):
    counts = set()
    for seed, size in ((0, (96, 128)), (1, (64, 64)), (2, (128, 96)), (0, (96, 128))):
        rois, prob, deltas = detect(net, seed, *size)
        assert len(prob) == len(deltas) == len(rois)
        counts.add(len(rois))
    assert len(counts) > 1, counts
    # The same image again gives the same detections: nothing is left over from the others.
    again = detect(net, 0)
    first = detect(net, 0)
    for a, b in zip(again, first):
        np.testing.assert_array_equal(a, b)


def test_roi_pooling_matches_pooling_each_proposal_alone(net):
    rois, prob, _ = detect(net, 3)
    feature = net.blobs["conv3"].data[0]
    pooled = net.blobs["roi_pool_conv3"].data
    scale = 1 / FEAT_STRIDE
    for k in range(0, len(rois), max(1, len(rois) // 5)):
        x1, y1, x2, y2 = np.round(rois[k, 1:] * scale).astype(int)
        region = feature[:, y1:y2 + 1, x1:x2 + 1]
        # Every bin's maximum is inside the proposal's window; their overall max is its max.
        assert pooled[k].max() == pytest.approx(region.max(), rel=1e-6)


def test_whole_net_equals_caffe_fast_rcnn(tmp_path):
    """The same net, weights (drawn and saved by the fork) and proposal layer, run by
    caffe-fast-rcnn's pycaffe (tests/golden_forks/record_frcnn_net.py) and here."""
    shutil.copytree(HERE / "rpn", tmp_path / "rpn")
    shutil.copy(GOLDEN / "net.prototxt", tmp_path / "net.prototxt")
    net = caffe.Net(str(tmp_path / "net.prototxt"), str(GOLDEN / "weights.caffemodel"),
                    caffe.TEST)
    assert_equals_recorded_golden(net)
