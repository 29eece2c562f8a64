"""Structure-aware mutation of prototxt inputs (libFuzzer custom mutator).

Byte mutations of a prototxt almost always give a syntax error, so the net builder behind the
parser is rarely reached. Half of the time this mutator instead parses the input, changes
one to three fields the way a careless or hostile author would (boundary numbers, other enum
values, another layer type, renamed bottoms and tops, added, removed or duplicated layers and
messages) and prints it back. The other half is libFuzzer's own byte mutation.
"""
import random

from google.protobuf import text_format

from caffe.proto.compat import is_repeated

_INTS = [0, 1, 2, 3, 4, 7, -1, -2, 100, 4096, 65535, 2 ** 31 - 1, -2 ** 31, 2 ** 32 - 1, 10 ** 6]
_FLOATS = [0.0, 1.0, -1.0, 0.5, -0.5, 1e-12, 1e30, -1e30, float("inf"), float("-inf"),
           float("nan"), 2.0, 3.5]
_RANGES = {"TYPE_INT32": (-2 ** 31, 2 ** 31 - 1), "TYPE_SINT32": (-2 ** 31, 2 ** 31 - 1),
           "TYPE_SFIXED32": (-2 ** 31, 2 ** 31 - 1), "TYPE_UINT32": (0, 2 ** 32 - 1),
           "TYPE_FIXED32": (0, 2 ** 32 - 1), "TYPE_INT64": (-2 ** 63, 2 ** 63 - 1),
           "TYPE_SINT64": (-2 ** 63, 2 ** 63 - 1), "TYPE_SFIXED64": (-2 ** 63, 2 ** 63 - 1),
           "TYPE_UINT64": (0, 2 ** 64 - 1), "TYPE_FIXED64": (0, 2 ** 64 - 1)}
_TYPE_NAMES = {}


def _type_name(field):
    if not _TYPE_NAMES:
        from google.protobuf.descriptor import FieldDescriptor
        for name in dir(FieldDescriptor):
            if name.startswith("TYPE_"):
                _TYPE_NAMES[getattr(FieldDescriptor, name)] = name
    return _TYPE_NAMES[field.type]


def _layer_types():
    from caffe.layers import layer_type_list
    return layer_type_list()


def _slots(msg, out, depth=0):
    """Every (message, field) pair a mutation may touch, set or not (set ones recursed)."""
    for field in msg.DESCRIPTOR.fields:
        out.append((msg, field))
        if field.message_type is None or depth > 6:
            continue
        if is_repeated(field):
            for sub in getattr(msg, field.name):
                _slots(sub, out, depth + 1)
        elif msg.HasField(field.name):
            _slots(getattr(msg, field.name), out, depth + 1)
    return out


def _blob_names(msg):
    names = set()
    for layer in getattr(msg, "layer", []):
        names.update(layer.top)
        names.update(layer.bottom)
    return sorted(names) or ["data"]


def _scalar(field, rng, msg, root):
    kind = _type_name(field)
    if kind in _RANGES:
        lo, hi = _RANGES[kind]
        value = rng.choice(_INTS + [rng.randint(-3, 64)])
        return min(max(value, lo), hi)
    if kind in ("TYPE_FLOAT", "TYPE_DOUBLE"):
        return rng.choice(_FLOATS + [rng.uniform(-10, 10)])
    if kind == "TYPE_BOOL":
        return rng.random() < 0.5
    if kind == "TYPE_ENUM":
        return rng.choice(field.enum_type.values).number
    if kind == "TYPE_STRING":
        if field.name == "type" and msg.DESCRIPTOR.name == "LayerParameter":
            return rng.choice(_layer_types())
        if field.name in ("bottom", "top"):
            return rng.choice(_blob_names(root) + ["new"])
        return rng.choice(["", "a", "data", "x" * 40, "../x", "max", "constant", "gaussian",
                           "xavier", "msra", "uniform", "bilinear", "positive_unitball"])
    return None   # bytes


def _mutate_once(root, rng):
    if rng.random() < 0.15 and hasattr(root, "layer") and len(root.layer):
        layers = root.layer
        i = rng.randrange(len(layers))
        action = rng.randrange(3)
        if action == 0:
            layers.add().CopyFrom(layers[i])
        elif action == 1:
            del layers[i]
        else:
            j = rng.randrange(len(layers))
            a, b = type(layers[i])(), type(layers[j])()
            a.CopyFrom(layers[i])
            b.CopyFrom(layers[j])
            layers[i].CopyFrom(b)
            layers[j].CopyFrom(a)
        return
    msg, field = rng.choice(_slots(root, []))
    if field.message_type is not None:
        if is_repeated(field):
            items = getattr(msg, field.name)
            if len(items) and rng.random() < 0.4:
                del items[rng.randrange(len(items))]
            elif len(items) and rng.random() < 0.5:
                items.add().CopyFrom(items[rng.randrange(len(items))])
            else:
                items.add()
        elif msg.HasField(field.name) and rng.random() < 0.3:
            msg.ClearField(field.name)
        else:
            getattr(msg, field.name).SetInParent()
        return
    value = _scalar(field, rng, msg, root)
    if value is None:
        return
    if is_repeated(field):
        items = getattr(msg, field.name)
        if len(items) and rng.random() < 0.3:
            del items[rng.randrange(len(items))]
        elif len(items) and rng.random() < 0.5:
            items[rng.randrange(len(items))] = value
        else:
            items.append(value)
    elif msg.HasField(field.name) and rng.random() < 0.2:
        msg.ClearField(field.name)
    else:
        setattr(msg, field.name, value)


def prototxt_mutator(message_class):
    """A libFuzzer custom mutator for prototxt inputs of `message_class`."""
    def mutate(data, max_size, seed):
        import atheris
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        msg = message_class()
        try:
            text_format.Parse(data.decode("utf-8"), msg)
        except Exception:
            return atheris.Mutate(data, max_size)
        for _ in range(rng.randint(1, 3)):
            try:
                _mutate_once(msg, rng)
            except (ValueError, TypeError):
                pass
        out = text_format.MessageToString(msg, as_one_line=rng.random() < 0.3).encode()
        return out if len(out) <= max_size else atheris.Mutate(data, max_size)
    return mutate
