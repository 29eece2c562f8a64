"""Export a caffe.Net to ONNX (`to_onnx`) or to a plain PyTorch module (`to_torch`).

    import caffe, caffe.export
    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)
    model = caffe.export.to_onnx(net, "model.onnx")     # an onnx.ModelProto
    module = caffe.export.to_torch(net)                  # a torch.nn.Module
    probs = module(torch.from_numpy(image))

Both reproduce the net's forward pass in its phase (export deploy nets, or TEST-phase
nets): the ONNX graph for the input shapes the net has when exported, the torch module
for any input shape the net itself accepts. `onnx` is imported only by to_onnx.

Both walk the net the same way (graph.py's plan_net: the layers the outputs need, in order,
with their values named); an emitter turns each step into its own form: onnx.py with
onnx_builder.py and the converters of onnx_vision.py, onnx_common.py, onnx_forks.py,
onnx_detection.py and onnx_regions.py, or torch_module.py with the ops of torch_ops.py.
"""
from .graph import ExportError
from .torch_module import CaffeModule, to_torch


def to_onnx(net, path=None, opset=None, outputs=None, name=None):
    """The net as an onnx.ModelProto, saved to `path` when given (see caffe.export.onnx)."""
    from . import onnx as _onnx
    return _onnx.to_onnx(net, path, _onnx.DEFAULT_OPSET if opset is None else opset,
                         outputs, name)


__all__ = ["to_onnx", "to_torch", "CaffeModule", "ExportError"]
