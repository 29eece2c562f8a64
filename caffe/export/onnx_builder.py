"""The ONNX emitter's graph builder and its converters, one per Caffe layer type.

A converter turns one step of the net walk (caffe.export.graph.plan_net) into nodes:
`@converter("Type") def _type(g, step)`, with g a Builder. onnx_vision.py, onnx_common.py,
onnx_forks.py, onnx_detection.py and onnx_regions.py hold the converters.
"""
import numpy as np

from .graph import Namer, layer_error


def _array(tensor, dtype=np.float32):
    return tensor.detach().cpu().numpy().astype(dtype)


class Builder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, opset, namer):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.opset, self.namer = opset, namer
        self.nodes, self.initializers, self.cache = [], [], {}
        self.node_names = Namer()
        # Values whose shape depends on the data (DetectionOutput's rows): value name -> the
        # shape to declare, with a named dimension where the blob's size varies.
        self.shapes = {}

    def fresh(self, hint):
        return self.namer.take(hint)

    def const(self, value, hint, dtype=np.float32, key=None):
        """An initializer; `key` identifies values that several layers share (RNN steps)."""
        if key is not None and key in self.cache:
            return self.cache[key]
        name = self.fresh(hint)
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        if key is not None:
            self.cache[key] = name
        return name

    def blob(self, blob, hint, shape=None, transform=None):
        """A learned blob as a float32 initializer, reshaped (and transformed) as asked;
        blobs shared between layers become one initializer."""
        key = (blob.data.data_ptr(), blob.shape, tuple(shape or ()), transform)
        if key in self.cache:
            return self.cache[key]
        array = _array(blob.data)
        if shape is not None:
            array = array.reshape(shape)
        if transform == "T":
            array = array.T
        return self.const(array, hint, key=key)

    def ints(self, values, hint="shape"):
        values = list(values)
        return self.const(values, hint, np.int64, key=("ints", tuple(values)))

    def scalar(self, value, hint="c"):
        return self.const(np.float32(value), hint, key=("scalar", float(value)))

    def node(self, op, inputs, out=None, hint=None, n_out=1, **attrs):
        """Add a node; returns its output name (or names when out is a list / n_out > 1)."""
        hint = hint or op
        if out is None:
            outs = [self.fresh(hint if n_out == 1 else f"{hint}:{i}") for i in range(n_out)]
        else:
            outs = [out] if isinstance(out, str) else list(out)
        self.nodes.append(self.helper.make_node(op, list(inputs), outs,
                                                name=self.node_names.take(hint), **attrs))
        return outs[0] if isinstance(out, str) or (out is None and n_out == 1) else outs

    # -- small compositions ---------------------------------------------------------
    def reshape(self, x, shape, out=None, hint="reshape"):
        return self.node("Reshape", [x, self.ints(shape)], out, hint)

    def pad(self, x, before, after, value, hint):
        """Pad the trailing len(before) axes of a rank-(2 + len) tensor with a constant."""
        pads = [0, 0] + list(before) + [0, 0] + list(after)
        return self.node("Pad", [x, self.ints(pads, "pads"), self.scalar(value, "pad_value")],
                         hint=hint + "/pad", mode="constant")

    def slice(self, x, starts, ends, axes, steps=None, hint="slice"):
        inputs = [x, self.ints(starts, "starts"), self.ints(ends, "ends"), self.ints(axes, "axes")]
        if steps is not None:
            inputs.append(self.ints(steps, "steps"))
        return self.node("Slice", inputs, hint=hint)

    def reduce_sum(self, x, axes, keepdims, out=None, hint="sum"):
        return self.node("ReduceSum", [x, self.ints(axes, "axes")], out, hint,
                         keepdims=int(keepdims))

    def split(self, x, parts, axis, hint="split"):
        """x cut into `parts` equal pieces along `axis` (a list of value names)."""
        # Opset 18 wants the number of pieces said, where older ones count the outputs.
        attrs = {"num_outputs": parts} if self.opset >= 18 else {}
        return self.node("Split", [x], hint=hint, n_out=parts, axis=axis, **attrs)

    def reduce_mean(self, x, axes, keepdims, out=None, hint="mean"):
        # Opset 18 moved ReduceMean's axes from an attribute to an input.
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.ints(axes, "axes")], out, hint,
                             keepdims=int(keepdims))
        return self.node("ReduceMean", [x], out, hint, axes=list(axes), keepdims=int(keepdims))

    def scale(self, x, factor, out=None, hint="scale"):
        if factor == 1 and out is None:
            return x
        return self.node("Mul", [x, self.scalar(factor)], out, hint)


CONVERTERS: dict = {}


def converter(*types):
    def register(fn):
        for t in types:
            # One converter per type: a second would win or lose by import order.
            if t in CONVERTERS:
                raise ValueError(f"two ONNX converters for layer type {t}")
            CONVERTERS[t] = fn
        return fn
    return register


def convert_step(g, step):
    fn = CONVERTERS.get(step.type)
    if fn is None:
        raise layer_error(step.layer, "ONNX has no equivalent for this layer type (supported: "
                                      f"{', '.join(sorted(CONVERTERS))})")
    fn(g, step)
