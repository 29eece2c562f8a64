"""The detection forks' layers in ONNX: Permute, Normalize, PriorBox (a constant) and Faster
R-CNN's test-time Dropout scale, through onnxruntime; DetectionOutput refuses clearly."""
import numpy as np
import pytest

import caffe
from caffe.export import ExportError
from tests.export.util import assert_close, caffe_forward, fill_weights, random_inputs, \
    run_onnx

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


@pytest.mark.parametrize("across, shared", [("true", "true"), ("false", "false")])
def test_ssd_head_exports(tmp_path, across, shared):
    net = net_for(tmp_path, HEAD % (across, shared))
    net.params["norm"][0].data[...] = 1 + np.arange(net.params["norm"][0].count)
    feeds = random_inputs(net)
    expected = caffe_forward(net, feeds, ["drop", "prior"])
    got, _ = run_onnx(net, feeds, ["drop", "prior"])
    for name in ("drop", "prior"):
        assert_close(got[name], expected[name], name)


def test_detection_output_is_not_exported(tmp_path):
    text = HEAD % ("true", "true") + """
layer { name: "conf" type: "Convolution" bottom: "norm" top: "conf"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "cperm" type: "Permute" bottom: "conf" top: "cperm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "cflat" type: "Flatten" bottom: "cperm" top: "cflat" }
layer { name: "det" type: "DetectionOutput" bottom: "flat" bottom: "cflat" bottom: "prior"
  top: "det" detection_output_param { num_classes: 3 code_type: CENTER_SIZE
    nms_param { nms_threshold: 0.45 } } }
"""
    net = net_for(tmp_path, text)
    pytest.importorskip("onnx")
    with pytest.raises(ExportError, match="det.*DetectionOutput"):
        caffe.export.to_onnx(net, outputs=["det"])
