"""Forks recognised by a net's structure: TextBoxes' and FaceBoxes' PriorBox, darknet2caffe's
pooling. Small nets shaped like each family's deploy file."""
import pytest

import caffe
from caffe.formats import parse_text
from caffe.net_dialects import mark_dialects
from caffe.proto import caffe_pb2

HEAD = """
layer {{ name: "{f}_mbox_loc" type: "Convolution" bottom: "{f}" top: "{f}_mbox_loc"
        convolution_param {{ num_output: {loc} kernel_size: 1
                            weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "{f}_mbox_loc_perm" type: "Permute" bottom: "{f}_mbox_loc"
        top: "{f}_mbox_loc_perm" permute_param {{ order: 0 order: 2 order: 3 order: 1 }} }}
layer {{ name: "{f}_mbox_loc_flat" type: "Flatten" bottom: "{f}_mbox_loc_perm"
        top: "{f}_mbox_loc_flat" }}
layer {{ name: "{f}_mbox_conf" type: "Convolution" bottom: "{f}" top: "{f}_mbox_conf"
        convolution_param {{ num_output: {conf} kernel_size: 1
                            weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "{f}_mbox_conf_perm" type: "Permute" bottom: "{f}_mbox_conf"
        top: "{f}_mbox_conf_perm" permute_param {{ order: 0 order: 2 order: 3 order: 1 }} }}
layer {{ name: "{f}_mbox_conf_flat" type: "Flatten" bottom: "{f}_mbox_conf_perm"
        top: "{f}_mbox_conf_flat" }}
layer {{ name: "{f}_mbox_priorbox" type: "PriorBox" bottom: "{f}" bottom: "data"
        top: "{f}_mbox_priorbox" prior_box_param {{ {prior} }} }}
"""
TAIL = """
layer {{ name: "mbox_loc" type: "Concat" {locs} top: "mbox_loc" concat_param {{ axis: 1 }} }}
layer {{ name: "mbox_conf" type: "Concat" {confs} top: "mbox_conf" concat_param {{ axis: 1 }} }}
layer {{ name: "mbox_priorbox" type: "Concat" {priors} top: "mbox_priorbox"
        concat_param {{ axis: 2 }} }}
layer {{ name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc" bottom: "mbox_conf"
        bottom: "mbox_priorbox" top: "detection_out"
        detection_output_param {{ num_classes: 2 share_location: true background_label_id: 0
          nms_param {{ nms_threshold: 0.45 top_k: 20 }} code_type: CENTER_SIZE keep_top_k: 10
          confidence_threshold: 0.3 }} }}
"""


def detection_net(size, heads):
    """heads: (feature name, stride, priors per cell, PriorBox settings)."""
    text = (f'name: "net" layer {{ name: "data" type: "Input" top: "data" input_param {{ '
            f'shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }} }} }}')
    for f, stride, n, prior in heads:
        text += (f'layer {{ name: "{f}" type: "Pooling" bottom: "data" top: "{f}" '
                 f'pooling_param {{ pool: AVE kernel_size: {stride} stride: {stride} }} }}')
        text += HEAD.format(f=f, loc=4 * n, conf=2 * n, prior=prior)
    text += TAIL.format(**{k: " ".join(f'bottom: "{f}_mbox_{s}"' for f, *_ in heads)
                           for k, s in (("locs", "loc_flat"), ("confs", "conf_flat"),
                                        ("priors", "priorbox"))})
    return parse_text(text, caffe_pb2.NetParameter())


TEXTBOXES = [("conv4_3", 8, 12, "min_size: 30.0 aspect_ratio: 2 aspect_ratio: 3 aspect_ratio: 5 "
                                "aspect_ratio: 7 aspect_ratio: 10 flip: false clip: true"),
             ("fc7", 16, 14, "min_size: 60.0 max_size: 114.0 aspect_ratio: 2 aspect_ratio: 3 "
                             "aspect_ratio: 5 aspect_ratio: 7 aspect_ratio: 10 flip: false")]
FACEBOXES = [("inception3", 32, 21, "min_size: 32 min_size: 64 min_size: 128 clip: false "
                                    "step: 32 offset: 0.5"),
             ("conv3_2", 64, 1, "min_size: 256 clip: false step: 64 offset: 0.5")]
SSD = [("conv4_3", 8, 4, "min_size: 30 max_size: 60 aspect_ratio: 2 flip: true step: 8"),
       ("fc7", 16, 6, "min_size: 60 max_size: 111 aspect_ratio: 2 aspect_ratio: 3 flip: true")]


@pytest.mark.parametrize("heads,dialect,priors", [
    (TEXTBOXES, "textboxes", 16 * 16 * 12 + 8 * 8 * 14),
    (FACEBOXES, "faceboxes", 4 * 4 * 21 + 2 * 2 * 1),
    (SSD, "", 16 * 16 * 4 + 8 * 8 * 6),
])
def test_detection_nets_build_and_run(heads, dialect, priors):
    param = detection_net(128, heads)
    marked = [lp.dialect for lp in mark_dialects(param).layer if lp.type == "PriorBox"]
    assert marked == [dialect] * len(heads)        # one witness marks every PriorBox
    net = caffe.Net(param, caffe.TEST)
    assert net.blobs["mbox_priorbox"].data.shape == (1, 2, 4 * priors)
    assert net.blobs["mbox_loc"].data.shape == (1, 4 * priors)
    net.forward()
    out = net.blobs["detection_out"].data
    assert out.shape[:2] == (1, 1) and out.shape[3] == 7


def test_mismatched_head_still_refused():
    heads = [("conv4_3", 8, 5, "min_size: 30 max_size: 60 aspect_ratio: 2 flip: true")]
    with pytest.raises(caffe.errors.CaffeError, match="priors"):
        caffe.Net(detection_net(64, heads), caffe.TEST)


def test_explicit_dialect_is_kept():
    param = detection_net(64, SSD)
    next(lp for lp in param.layer if lp.type == "PriorBox").dialect = "faceboxes"
    mark_dialects(param)
    assert [lp.dialect for lp in param.layer if lp.type == "PriorBox"] == ["faceboxes", ""]


def test_dialect_on_a_type_without_one_is_refused():
    with pytest.raises(caffe.errors.LayerSetupError, match="dialect 'textboxes'.*none"):
        caffe.Net(parse_text('layer { name: "x" type: "Input" top: "x" dialect: "textboxes" '
                             'input_param { shape { dim: 1 } } }', caffe_pb2.NetParameter()),
                  caffe.TEST)


def test_per_class_locations_are_not_read_as_a_fork():
    """share_location: false, 2 classes: 8 values per prior, as TextBoxes' doubled 4."""
    head = ("conv4_3", 8, 4, "min_size: 30 max_size: 60 aspect_ratio: 2 flip: true")
    param = detection_net(64, [head])
    for lp in param.layer:
        if lp.type == "Convolution" and lp.name.endswith("_loc"):
            lp.convolution_param.num_output *= 2
        if lp.type == "DetectionOutput":
            lp.detection_output_param.share_location = False
    assert not any(lp.dialect for lp in mark_dialects(param).layer)
