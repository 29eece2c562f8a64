"""Write nets in Python: pycaffe's NetSpec, `layers` (L) and `params` (P).

    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[64, 1, 28, 28]), dict(dim=[64, 1])], ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    print(n.to_proto())

Keyword arguments fill the layer's own `<type>_param` message when it has that field and
the LayerParameter otherwise; names ending in `param` (param, transform_param, ...) always
go to the LayerParameter. `ntop` sets the number of tops (0 returns the layer itself), and
`in_place=True` makes the tops the bottoms. Blobs take the names they are assigned to in a
NetSpec; unnamed ones are called <Type><count>, as pycaffe names them, so the text written
here is the text pycaffe writes for the same code.
"""
from collections import Counter, OrderedDict

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from .errors import CaffeError
from .proto import caffe_pb2
from .proto.compat import is_repeated


class NetSpecError(CaffeError):
    """A net specification that cannot be turned into a NetParameter."""


def param_name_dict():
    """{layer type: prefix of its *_param field}, e.g. 'InnerProduct' -> 'inner_product'."""
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            names[field.message_type.name[:-len("Parameter")]] = field.name[:-len("_param")]
    # Types whose parameters live in another type's message (pycaffe made users spell
    # these out as convolution_param=dict(...), which still works).
    for type_name, prefix in (("Deconvolution", "convolution"), ("Im2col", "convolution"),
                              ("RNN", "recurrent"), ("LSTM", "recurrent"),
                              ("SoftmaxWithLoss", "softmax")):
        names.setdefault(type_name, prefix)
    return names


_param_names = param_name_dict()


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def assign_proto(proto, name, val, where=None):
    """Set field `name` of message `proto` from a Python value: lists fill repeated fields
    (a single value becomes a one-element list), dicts fill messages, recursively."""
    where = where or proto.DESCRIPTOR.name
    field = proto.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise NetSpecError(f"{where} has no field '{name}'")
    path = f"{where}.{name}"
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if is_repeated(field):
        items = list(val) if isinstance(val, (list, tuple, np.ndarray)) else [val]
        container = getattr(proto, name)
        for item in items:
            if is_message:
                _fill_message(container.add(), item, path)
            else:
                container.append(_scalar(field, item, path))
    elif is_message:
        _fill_message(getattr(proto, name), val, path)
    else:
        try:
            setattr(proto, name, _scalar(field, val, path))
        except (TypeError, ValueError) as e:
            raise NetSpecError(f"{path} = {val!r}: {e}") from None


def _fill_message(msg, val, path):
    if isinstance(val, dict):
        for k, v in val.items():
            assign_proto(msg, k, v, path)
    elif hasattr(val, "DESCRIPTOR") and val.DESCRIPTOR is msg.DESCRIPTOR:
        msg.CopyFrom(val)
    else:
        raise NetSpecError(f"{path} is a {msg.DESCRIPTOR.name} message: give a dict of its "
                           f"fields, not {val!r}")


def _scalar(field, val, path):
    val = _plain(val)
    if field.type == FieldDescriptor.TYPE_ENUM and isinstance(val, str):
        value = field.enum_type.values_by_name.get(val)
        if value is None:
            raise NetSpecError(f"{path}: '{val}' is not one of "
                               f"{', '.join(field.enum_type.values_by_name)}")
        return value.number
    return val


class Top:
    """One output blob of a layer (the n-th top of Function `fn`)."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)

    def __repr__(self):
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """One layer: its type, its input Tops and its parameters."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(inp)})")
        self.inputs = inputs
        self.params = params
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        if self.in_place and self.ntop > len(inputs):
            raise NetSpecError(f"{type_name}: in_place=True makes the tops the bottoms, but it "
                               f"has {self.ntop} top(s) and only {len(inputs)} bottom(s)")
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        if self not in names:
            if self.ntop > 0:
                names[self] = self._get_top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    @staticmethod
    def _get_top_name(top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = f"{top.fn.type_name}{autonames[top.fn.type_name]}"
        return names[top]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(bottoms)
        else:
            layer.top.extend(self._get_top_name(top, names, autonames) for top in self.tops)
        layer.name = self._get_name(names, autonames)
        where = f"layer '{layer.name}' ({self.type_name})"
        own = _param_names.get(self.type_name)
        for k, v in self.params.items():
            own_msg = getattr(layer, own + "_param") if own else None
            if not k.endswith("param") and own_msg is not None and \
                    k in own_msg.DESCRIPTOR.fields_by_name:
                assign_proto(own_msg, k, v, f"{where} {own}_param")
            elif k in layer.DESCRIPTOR.fields_by_name:
                assign_proto(layer, k, v, where)
            else:
                inside = f"{own}_param or " if own else ""
                raise NetSpecError(f"{where}: unknown parameter '{k}': it is a field of neither "
                                   f"{inside}LayerParameter")
        layers[self] = layer

    def __repr__(self):
        return f"<Function {self.type_name} ({self.ntop} tops)>"


def to_proto(*tops):
    """A NetParameter with every layer needed to compute the given tops (or top-less
    layers); blobs not named otherwise are called <Type><count>."""
    layers, autonames = OrderedDict(), Counter()
    for top in tops:
        if not isinstance(top, (Top, Function)):
            raise TypeError(f"to_proto takes Tops (or top-less layers), got {type(top)}")
        top._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Named tops: assign them as attributes (n.conv1 = L.Convolution(...)) or items;
    to_proto() writes every layer needed for them, blobs named after the attributes."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        if not isinstance(value, (Top, Function)):
            hint = ""
            if isinstance(value, tuple) and value and all(isinstance(t, Top) for t in value):
                hint = (f"; the layer has {len(value)} tops: name each one, e.g. "
                        f"n.a, n.b = L.{value[0].fn.type_name}(..., ntop={len(value)})")
            raise TypeError(f"NetSpec.{name} must be a Top (a layer's output) or a top-less "
                            f"layer, got {type(value).__name__}{hint}")
        self.tops[name] = value

    def __getattr__(self, name):
        tops = self.__dict__.get("tops", {})
        if name in tops:
            return tops[name]
        if name.startswith("__"):
            raise AttributeError(name)
        known = ", ".join(tops) or "none yet"
        raise AttributeError(f"NetSpec has no top '{name}': it is used before it was assigned "
                             f"(assigned so far: {known})")

    def __setitem__(self, name, value):
        self.__setattr__(name, value)

    def __getitem__(self, name):
        if name not in self.tops:
            return self.__getattr__(name)
        return self.tops[name]

    def __contains__(self, name):
        return name in self.tops

    def keys(self):
        return list(self.tops)

    def to_proto(self):
        """A NetParameter with the layers needed for every assigned top."""
        given = {top: name for name, top in self.tops.items()}
        names = dict(given)
        layers, autonames = OrderedDict(), Counter()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        _check_generated_names(names, given)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


def _check_generated_names(names, given):
    """An unnamed top's <Type><count> name must not be a name the user gave another top:
    the net would have two blobs (or layers) of one name."""
    owner = {}
    for obj, name in names.items():
        if not isinstance(obj, Top):
            continue
        other = owner.setdefault(name, obj)
        if other is not obj and (obj not in given or other not in given):
            unnamed, named = (obj, other) if obj not in given else (other, obj)
            raise NetSpecError(
                f"the unnamed {unnamed.fn.type_name} top was named '{name}' automatically, "
                f"which is also the name given to a {named.fn.type_name} top; assign the "
                f"unnamed top to the NetSpec under a name of its own")


class Layers:
    """L.<Type>(*bottoms, **params): one Top, a tuple of `ntop` Tops, or with ntop=0 the
    layer itself."""

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        layer_fn.__name__ = name
        return layer_fn


class Parameters:
    """P.<Type>.<CONSTANT>: enum values of <Type>Parameter, e.g. P.Pooling.MAX."""

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        message = getattr(caffe_pb2, name + "Parameter", None)
        if message is None:
            raise AttributeError(f"caffe_pb2 has no message {name}Parameter")

        class Param:
            def __getattr__(self, param_name):
                try:
                    return getattr(message, param_name)
                except AttributeError:
                    raise AttributeError(f"{name}Parameter has no constant "
                                         f"'{param_name}'") from None
        return Param()


layers = Layers()
params = Parameters()
