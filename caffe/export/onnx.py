"""caffe.Net -> ONNX, node by node with onnx.helper, keeping Caffe's numbers exactly.

Where ONNX's operator and Caffe's layer differ at the edges, the graph spells Caffe's
rule out: pooling windows get explicit pads so that Caffe's ceil-rounded output size and
its divisor (the window clipped to the padded input) hold on every runtime; ArgMax breaks
ties towards the larger index; Power, Exp and Log apply scale and shift in Caffe's order.
Shapes are static: the graph is exported for the shapes the net's inputs have now
(reshape them first for another batch size).
"""
import os

# Imported for their converters' registration.
from . import (onnx_common, onnx_detection, onnx_forks, onnx_regions,  # noqa: F401
               onnx_vision)
from .._optional import require
from .graph import ExportError, Namer, plan_net
from .onnx_builder import Builder, convert_step

DEFAULT_OPSET = 17
MIN_OPSET = 13        # Softmax over one axis, ReduceSum / Split / Slice taking tensors


def to_onnx(net, path=None, opset=DEFAULT_OPSET, outputs=None, name=None):
    """The net's forward as an onnx.ModelProto (saved to `path` when given).

    `outputs` names the blobs to export (default: the net's outputs); layers none of them
    needs are left out. Weights are stored as float32. A layer ONNX cannot express raises
    caffe.export.ExportError naming the layer and its type.
    """
    onnx = require("onnx", extra="onnx", feature="ONNX export")
    from onnx import TensorProto, helper
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET} to "
                          f"{onnx.defs.onnx_opset_version()}")
    namer = Namer()
    plan = plan_net(net, outputs, namer)
    g = Builder(opset, namer)
    for step in plan.steps:
        convert_step(g, step)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(b.shape))
              for n, b in plan.inputs]
    outs, input_names, seen = [], {n for n, _ in plan.inputs}, set()
    for out_name, value, blob in plan.outputs:
        if out_name in input_names:
            # An input that layers overwrite in place: its final value goes out as
            # 'blob/layer', the input keeps the blob's name.
            out_name = value
        elif out_name != value:
            g.node("Identity", [value], out_name)
        if out_name not in seen:
            seen.add(out_name)
            outs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT,
                                                      g.shapes.get(value, list(blob.shape))))
    graph = helper.make_graph(g.nodes, name or net.name or "caffe_net", inputs, outs,
                              initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    from .. import __version__
    model = helper.make_model(graph, opset_imports=opsets, producer_name="pycaffe",
                              producer_version=__version__)
    # The oldest IR version that carries this opset, so older runtimes load the file.
    model.ir_version = helper.find_min_ir_version_for(opsets)
    if path is not None:
        # A protobuf message stops at 2 GiB: bigger models keep their weights beside the file.
        large = sum(t.ByteSize() for t in model.graph.initializer) > 2 ** 31 - 2 ** 26
        onnx.save(model, str(path), save_as_external_data=large,
                  location=os.path.basename(str(path)) + ".data" if large else None)
    return model
