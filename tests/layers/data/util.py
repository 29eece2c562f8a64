"""Shared by the data layer tests: a net from prototxt text, in float64."""
import torch

import caffe
from caffe.formats import parse_text
from caffe.proto import caffe_pb2


def make_net(text, phase=caffe.TEST, device="cpu"):
    return caffe.Net(parse_text(text, caffe_pb2.NetParameter()), phase, dtype=torch.float64,
                     device=device)
