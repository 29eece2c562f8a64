"""caffe.proto's SSD and Faster R-CNN fields: names and numbers as the forks gave them."""
import re
import struct
from pathlib import Path

import pytest
from google.protobuf import text_format
from google.protobuf.internal.encoder import _VarintBytes

from caffe.proto import caffe_pb2, dialects

DOC = Path(__file__).resolve().parents[1] / "docs" / "forks" / "detection.md"
ROW = re.compile(r"^\| (\w+) \| (\w+) \| (\d+) \| (\d+) \| ([\w.]+) \| (SSD|Faster R-CNN) \|$", re.M)
# The fork numbers we could not keep (see the doc's "Numbers that clash").
RELOCATED = {("SolverParameter", "eval_type"): 41, ("SolverParameter", "ap_version"): 42}


def on_disk(message, field, number):
    """The number a field has in files: LayerParameter's fork fields by dialects.py's table."""
    if message == "LayerParameter" and number in dialects.HOME:
        return dialects.HOME[number][0]
    return RELOCATED.get((message, field), number)


def doc_rows():
    rows = ROW.findall(DOC.read_text())
    assert len(rows) > 150, "the field table of docs/forks/detection.md is missing"
    return rows


def test_doc_table_matches_schema():
    for message, field, ours, theirs, type_name, _ in doc_rows():
        descriptor = getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[field]
        assert descriptor.number == int(ours), (message, field)
        kind = descriptor.message_type or descriptor.enum_type
        assert (kind.name if kind else type_name) == type_name, (message, field)
        assert on_disk(message, field, int(ours)) == int(theirs), (message, field)


def test_every_fork_field_is_in_the_table():
    """Nothing in the fork blocks of caffe.proto is left out of the doc."""
    listed = {(m, f) for m, f, *_ in doc_rows()}
    text = (Path(caffe_pb2.__file__).parent / "caffe.proto").read_text()
    for fork in ("SSD", "Faster R-CNN"):
        for block in re.findall(r"// ---- fork: " + re.escape(fork) + r" \(.*?// ---- end fork",
                                text, re.S):
            for name in re.findall(r"(?:optional|repeated) [\w.]+ (\w+) = \d+", block):
                assert any(f == name for _, f in listed), f"{fork}: {name} not in {DOC.name}"


def field_bytes(number, payload):
    return _VarintBytes(number << 3 | 2) + _VarintBytes(len(payload)) + payload


def read_layers(*layers):
    """Layers of a binary NetParameter laid out by the forks' numbers, read as files are."""
    data = b"".join(field_bytes(100, layer) for layer in layers)
    return caffe_pb2.NetParameter.FromString(dialects.to_canonical(data)).layer


def test_ssd_layer_parses_from_fork_wire_bytes():
    """Bytes laid out by the fork's numbers (203: prior_box_param; 1/3: min_size/aspect_ratio)."""
    prior = b"\x0d" + struct.pack("<f", 30.0) + b"\x1d" + struct.pack("<f", 2.0)
    layer = field_bytes(1, b"p") + field_bytes(2, b"PriorBox") + field_bytes(203, prior)
    parsed, = read_layers(layer)
    assert parsed.prior_box_param.min_size == [30.0]
    assert parsed.prior_box_param.aspect_ratio == [2.0]


def test_faster_rcnn_fields_parse_from_fork_wire_bytes():
    roi = b"\x08\x06\x10\x07\x1d" + struct.pack("<f", 0.0625)
    sl1 = b"\x0d" + struct.pack("<f", 3.0)
    pool, loss = read_layers(field_bytes(2, b"ROIPooling") + field_bytes(8266711, roi),
                             field_bytes(2, b"SmoothL1Loss") + field_bytes(8266712, sl1))
    assert (pool.roi_pooling_param.pooled_h, pool.roi_pooling_param.pooled_w) == (6, 7)
    assert pool.roi_pooling_param.spatial_scale == 0.0625
    assert loss.smooth_l1_loss_param.sigma == 3.0


SSD_SOLVER = """net: "train.prototxt" base_lr: 0.001 lr_policy: "multistep" stepvalue: 80000
eval_type: "detection" ap_version: "11point" show_per_class_result: true
layer_wise_reduce: false weights: "vgg.caffemodel" """


def test_ssd_solver_text_loads_beside_bvlc_fields():
    solver = text_format.Parse(SSD_SOLVER, caffe_pb2.SolverParameter())
    assert (solver.eval_type, solver.ap_version) == ("detection", "11point")
    assert solver.layer_wise_reduce is False and list(solver.weights) == ["vgg.caffemodel"]
    assert caffe_pb2.SolverParameter.FromString(solver.SerializeToString()) == solver


@pytest.mark.parametrize("text", [
    'type: "AnnotatedData" annotated_data_param { batch_sampler { sampler { min_scale: 0.3 } '
    'sample_constraint { min_jaccard_overlap: 0.1 } max_trials: 50 } label_map_file: "l.prototxt" } '
    'transform_param { resize_param { resize_mode: WARP height: 300 width: 300 interp_mode: LINEAR '
    'interp_mode: CUBIC } distort_param { brightness_prob: 0.5 brightness_delta: 32 } '
    'expand_param { prob: 0.5 max_expand_ratio: 4 } emit_constraint { emit_type: CENTER } }',
    'type: "DetectionOutput" detection_output_param { num_classes: 21 code_type: CENTER_SIZE '
    'nms_param { nms_threshold: 0.45 top_k: 400 } keep_top_k: 200 confidence_threshold: 0.01 }',
    'type: "MultiBoxLoss" multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX '
    'match_type: PER_PREDICTION mining_type: MAX_NEGATIVE neg_pos_ratio: 3 }',
    'type: "Normalize" norm_param { across_spatial: false scale_filler { type: "constant" '
    'value: 20 } channel_shared: false }',
    'type: "Permute" permute_param { order: 0 order: 2 order: 3 order: 1 }',
    'type: "Dropout" dropout_param { dropout_ratio: 0.5 scale_train: false }',
])
def test_fork_prototxt_round_trips(text):
    layer = text_format.Parse(text, caffe_pb2.LayerParameter())
    assert caffe_pb2.LayerParameter.FromString(layer.SerializeToString()) == layer


def test_annotated_datum_round_trips():
    record = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
    record.datum.channels, record.datum.height, record.datum.width = 3, 2, 2
    group = record.annotation_group.add(group_label=7)
    group.annotation.add(instance_id=0).bbox.CopyFrom(
        caffe_pb2.NormalizedBBox(xmin=0.1, ymin=0.2, xmax=0.5, ymax=0.9, difficult=True))
    again = caffe_pb2.AnnotatedDatum.FromString(record.SerializeToString())
    assert again.annotation_group[0].annotation[0].bbox.difficult
    assert again.annotation_group[0].group_label == 7
