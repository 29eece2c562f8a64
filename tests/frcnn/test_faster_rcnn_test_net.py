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

pytest.importorskip("yaml", reason="the proposal layer reads its param_str with PyYAML")
HERE = Path(__file__).parent
FEAT_STRIDE = 16


def zf_like(num_classes=21):
    def conv(name, bottom, n, k, s=1, p=0):
        return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
                f'convolution_param {{ num_output: {n} kernel_size: {k} stride: {s} pad: {p} '
                f'weight_filler {{ type: "gaussian" std: 0.05 }} }} }}\n'
                f'layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" top: "{name}" }}\n')

    def pool(name, bottom):
        return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
                f'pooling_param {{ pool: MAX kernel_size: 3 stride: 2 pad: 1 }} }}\n')

    def fc(name, bottom, n, std=0.05):
        return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" '
                f'inner_product_param {{ num_output: {n} '
                f'weight_filler {{ type: "gaussian" std: {std} }} }} }}\n')

    return ('name: "ZF-like"\n'
            'input: "data" input_shape { dim: 1 dim: 3 dim: 96 dim: 128 }\n'
            'input: "im_info" input_shape { dim: 1 dim: 3 }\n' +
            conv("conv1", "data", 8, 7, 2, 3) + pool("pool1", "conv1") +
            conv("conv2", "pool1", 16, 5, 2, 2) + pool("pool2", "conv2") +
            conv("conv3", "pool2", 16, 3, 1, 1) +
            conv("rpn_conv", "conv3", 16, 3, 1, 1) +
            'layer { name: "rpn_cls_score" type: "Convolution" bottom: "rpn_conv" '
            'top: "rpn_cls_score" convolution_param { num_output: 18 kernel_size: 1 '
            'weight_filler { type: "gaussian" std: 0.5 } } }\n'
            'layer { name: "rpn_bbox_pred" type: "Convolution" bottom: "rpn_conv" '
            'top: "rpn_bbox_pred" convolution_param { num_output: 36 kernel_size: 1 '
            'weight_filler { type: "gaussian" std: 0.01 } } }\n'
            'layer { name: "rpn_cls_score_reshape" type: "Reshape" bottom: "rpn_cls_score" '
            'top: "rpn_cls_score_reshape" reshape_param { shape { dim: 0 dim: 2 dim: -1 '
            'dim: 0 } } }\n'
            'layer { name: "rpn_cls_prob" type: "Softmax" bottom: "rpn_cls_score_reshape" '
            'top: "rpn_cls_prob" }\n'
            'layer { name: "rpn_cls_prob_reshape" type: "Reshape" bottom: "rpn_cls_prob" '
            'top: "rpn_cls_prob_reshape" reshape_param { shape { dim: 0 dim: 18 dim: -1 '
            'dim: 0 } } }\n'
            'layer { name: "proposal" type: "Python" bottom: "rpn_cls_prob_reshape" '
            'bottom: "rpn_bbox_pred" bottom: "im_info" top: "rois" python_param { '
            'module: "rpn.proposal_layer" layer: "ProposalLayer" '
            f"param_str: \"'feat_stride': {FEAT_STRIDE}\" }} }}\n"
            'layer { name: "roi_pool_conv3" type: "ROIPooling" bottom: "conv3" bottom: "rois" '
            'top: "roi_pool_conv3" roi_pooling_param { pooled_w: 3 pooled_h: 3 '
            f'spatial_scale: {1 / FEAT_STRIDE} }} }}\n' +
            fc("fc6", "roi_pool_conv3", 32) +
            'layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }\n'
            'layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" '
            'dropout_param { dropout_ratio: 0.5 scale_train: false } }\n' +
            fc("cls_score", "fc6", num_classes, 0.01) + fc("bbox_pred", "fc6", 4 * num_classes,
                                                            0.001) +
            'layer { name: "cls_prob" type: "Softmax" bottom: "cls_score" top: "cls_prob" }\n')


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
