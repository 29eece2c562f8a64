"""Small nets and solver builders shared by the solver tests."""
import torch

from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from caffe.solvers import get_solver

# Two learned blobs with different lr_mult / decay_mult; w1 is pulled towards the input t.
PARAM_NET = """name: "params"
layer { name: "w1" type: "Parameter" top: "w1" parameter_param { shape { dim: 3 dim: 4 } }
        param { lr_mult: 1 decay_mult: 1 } }
layer { name: "w2" type: "Parameter" top: "w2" parameter_param { shape { dim: 5 } }
        param { lr_mult: 2 decay_mult: 0.5 } }
layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 3 dim: 4 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "w1" bottom: "t" top: "loss" }
layer { name: "silence" type: "Silence" bottom: "w2" }
"""

# A linear classifier with a TEST-phase accuracy, fed by Input layers.
CLASSIFIER_NET = """name: "classifier"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 6 dim: 4 } shape { dim: 6 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def solver_param(text, net=PARAM_NET):
    param = parse_text(text, caffe_pb2.SolverParameter())
    if net is not None:
        parse_text(net, param.net_param)
    return param


def make_solver(text, net=PARAM_NET, dtype=torch.float64, **kwargs):
    return get_solver(solver_param(text, net), dtype=dtype, **kwargs)
