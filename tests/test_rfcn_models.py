"""An R-FCN test net in the form OpenCV runs it (rfcn_pascal_voc_resnet50's layout, reduced):
an RPN whose Proposal layer is OpenCV's, position-sensitive score maps pooled by PSROIPooling
and averaged. With the same random weights (written here, read by OpenCV) its rois, class
probabilities and box deltas equal OpenCV dnn's."""
import numpy as np
import pytest

import caffe
from tests.frcnn.zf_net import RPN_CLS_PROB

G = 7


def conv(name, bottom, out, kernel=3, stride=1, pad=1, relu=True):
    text = (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {out} kernel_size: {kernel} stride: {stride} '
            f'pad: {pad} weight_filler {{ type: "gaussian" std: 0.1 }} '
            f'bias_filler {{ type: "constant" value: 0.01 }} }} }}\n')
    if relu:
        text += f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}\n'
    return text


def rfcn_net(height=96, width=128, classes=21):
    text = (f'name: "rfcn"\ninput: "data" input_shape {{ dim: 1 dim: 3 dim: {height} '
            f'dim: {width} }}\ninput: "im_info" input_shape {{ dim: 1 dim: 3 }}\n')
    bottom = "data"
    for k, out in enumerate((8, 16, 16, 24), 1):       # four stride-2 stages: feat_stride 16
        text += conv(f"conv{k}", bottom, out, stride=2)
        bottom = f"conv{k}"
    text += conv("rpn_conv", bottom, 24)
    text += conv("rpn_cls_score", "rpn_conv", 18, 1, 1, 0, relu=False)
    text += conv("rpn_bbox_pred", "rpn_conv", 36, 1, 1, 0, relu=False)
    text += RPN_CLS_PROB
    text += ('layer { name: "proposal" type: "Proposal" bottom: "rpn_cls_prob_reshape" '
             'bottom: "rpn_bbox_pred" bottom: "im_info" top: "rois" proposal_param { '
             'ratio: 0.5 ratio: 1 ratio: 2 scale: 8 scale: 16 scale: 32 feat_stride: 16 '
             'pre_nms_topn: 600 post_nms_topn: 50 nms_thresh: 0.7 } }\n')
    text += conv("conv_new_1", bottom, 32, 1, 1, 0)
    text += conv("rfcn_cls", "conv_new_1", classes * G * G, 1, 1, 0, relu=False)
    text += conv("rfcn_bbox", "conv_new_1", 8 * G * G, 1, 1, 0, relu=False)
    for kind, dim in (("cls", classes), ("loc", 8)):
        source = "rfcn_cls" if kind == "cls" else "rfcn_bbox"
        text += (f'layer {{ name: "psroipooled_{kind}_rois" type: "PSROIPooling" '
                 f'bottom: "{source}" bottom: "rois" top: "psroipooled_{kind}_rois" '
                 f'psroi_pooling_param {{ spatial_scale: 0.0625 output_dim: {dim} '
                 f'group_size: {G} }} }}\n'
                 f'layer {{ name: "ave_{kind}_rois" type: "Pooling" '
                 f'bottom: "psroipooled_{kind}_rois" top: "ave_{kind}_rois" pooling_param {{ '
                 f'pool: AVE kernel_size: {G} stride: {G} }} }}\n')
    text += ('layer { name: "cls_prob_pre" type: "Softmax" bottom: "ave_cls_rois" '
             'top: "cls_prob_pre" }\n'
             'layer { name: "cls_prob" type: "Reshape" bottom: "cls_prob_pre" top: "cls_prob" '
             f'reshape_param {{ shape {{ dim: -1 dim: {classes} }} }} }}\n'
             'layer { name: "bbox_pred" type: "Reshape" bottom: "ave_loc_rois" top: "bbox_pred" '
             'reshape_param { shape { dim: -1 dim: 8 } } }\n')
    return text


def test_rfcn_test_net_equals_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    (tmp_path / "rfcn.prototxt").write_text(rfcn_net())
    caffe.set_random_seed(11)
    net = caffe.Net(str(tmp_path / "rfcn.prototxt"), caffe.TEST)
    net.save(str(tmp_path / "rfcn.caffemodel"))
    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, (1, 3, 96, 128)).astype(np.float32)
    info = np.array([[96, 128, 1.0]], np.float32)
    out = net.forward(data=data, im_info=info)
    cv = cv2.dnn.readNetFromCaffe(str(tmp_path / "rfcn.prototxt"),
                                  str(tmp_path / "rfcn.caffemodel"))
    cv.setInput(data, "data")
    cv.setInput(info, "im_info")
    rois, prob, deltas = cv.forward(["proposal", "cls_prob", "bbox_pred"])
    n = int(rois.reshape(-1, 5).any(1).sum())
    assert n > 5 and net.blobs["rois"].data.any(1).sum() == n
    np.testing.assert_allclose(net.blobs["rois"].data, rois.reshape(-1, 5), atol=1e-3)
    np.testing.assert_allclose(out["cls_prob"], prob.reshape(out["cls_prob"].shape), atol=1e-4)
    np.testing.assert_allclose(out["bbox_pred"], deltas.reshape(out["bbox_pred"].shape),
                               atol=1e-4)
    assert out["cls_prob"].shape == (50, 21) and np.allclose(out["cls_prob"].sum(1), 1, atol=1e-5)
