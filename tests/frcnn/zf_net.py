"""The Faster R-CNN test net of tests/frcnn: py-faster-rcnn's ZF `test.prototxt` in shape, reduced.

conv/pool to a stride of 16, the RPN (3x3 conv, 18 scores reshaped for a 2-way Softmax and
back, 36 box deltas), the Python proposal layer `rpn.proposal_layer.ProposalLayer`
(tests/frcnn/rpn), ROIPooling at 1/16, fc6 + ReLU + Dropout (scale_train: false, the fork's),
cls_score + Softmax and bbox_pred, with gaussian fillers.
"""
from pathlib import Path

import numpy as np

from tests.ranked import match_rows

FEAT_STRIDE = 16
SIZES = [(64, 80), (48, 64)]       # the recorded images: two sizes, two numbers of proposals
GOLDEN = Path(__file__).resolve().parents[1] / "golden_forks" / "models" / "frcnn_zf_test"
# The RPN's 18 scores as a 2-way Softmax and back (py-faster-rcnn's and R-FCN's layout).
RPN_CLS_PROB = (
    'layer { name: "rpn_cls_score_reshape" type: "Reshape" bottom: "rpn_cls_score" '
    'top: "rpn_cls_score_reshape" reshape_param { shape { dim: 0 dim: 2 dim: -1 '
    'dim: 0 } } }\n'
    'layer { name: "rpn_cls_prob" type: "Softmax" bottom: "rpn_cls_score_reshape" '
    'top: "rpn_cls_prob" }\n'
    'layer { name: "rpn_cls_prob_reshape" type: "Reshape" bottom: "rpn_cls_prob" '
    'top: "rpn_cls_prob_reshape" reshape_param { shape { dim: 0 dim: 18 dim: -1 '
    'dim: 0 } } }\n')


def assert_equals_recorded_golden(net):
    """Run `net` (GOLDEN's prototxt and weights) on the recorded images: rois, cls_prob and
    bbox_pred equal caffe-fast-rcnn's within 1e-4, each proposal's row with its own (the
    proposals are ranked by a computed score: near-equal ones may come in either order)."""
    golden = np.load(GOLDEN / "golden.npz")
    names = ("rois", "cls_prob", "bbox_pred")
    for k in range(len(SIZES)):
        data, info = golden[f"in/{k}/data"], golden[f"in/{k}/im_info"]
        net.blobs["data"].reshape(*data.shape)
        net.forward(data=data, im_info=info)
        ours = [net.blobs[name].data.reshape(len(net.blobs["rois"].data), -1) for name in names]
        theirs = [golden[f"out/{k}/{name}"].reshape(len(golden[f"out/{k}/rois"]), -1)
                  for name in names]
        for name, a, b in zip(names, ours, theirs):
            assert a.shape == b.shape, f"image {k}: {name} {a.shape} vs golden {b.shape}"
        expected = np.concatenate(theirs, 1)
        match_rows(np.concatenate(ours, 1), expected, tol=1e-4 + 1e-4 * np.abs(expected))


def zf_like(height=96, width=128, num_classes=21):
    """The net's text: net-level inputs (as py-faster-rcnn's test.prototxt, which predates the
    Input layer), an image of height x width."""
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
            f'input: "data" input_shape {{ dim: 1 dim: 3 dim: {height} dim: {width} }}\n'
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
            + RPN_CLS_PROB +
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
