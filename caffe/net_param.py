"""NetParameter rewrites done before a Net is built: rule filtering and Split insertion.

These are Caffe's Net::FilterNet / StateMeetsRule and util/insert_splits, on protobuf messages.
"""
from collections import defaultdict

from .errors import NetError
from .proto import caffe_pb2


def state_meets_rule(state, rule, layer_name=""):
    """NetStateRule semantics: every condition the rule sets must hold."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def filter_net(param):
    """Keep the layers whose include/exclude rules admit param.state (Net::FilterNet)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for layer in param.layer:
        if len(layer.include) and len(layer.exclude):
            raise NetError(f"layer '{layer.name}': specify either include rules or exclude "
                           f"rules, not both")
        if len(layer.include):
            keep = any(state_meets_rule(param.state, r, layer.name) for r in layer.include)
        else:
            keep = not any(state_meets_rule(param.state, r, layer.name) for r in layer.exclude)
        if keep:
            out.layer.add().CopyFrom(layer)
    return out


def split_layer_name(layer, blob, index):
    # BVLC's SplitLayerName: the blob first (label_mnist_1_split), as logs and layer_dict show.
    return f"{blob}_{layer}_{index}_split"


def split_blob_name(layer, blob, index, k):
    return f"{blob}_{layer}_{index}_split_{k}"


def insert_splits(param):
    """Give every blob used more than once (as a bottom or a loss) its own Split layer."""
    last_top = {}                       # blob name -> (layer index, top index)
    source_of = {}                      # (layer index, bottom index) -> (layer, top)
    uses = defaultdict(int)             # (layer, top) -> number of consumers
    loss_weight = {}
    for i, layer in enumerate(param.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_top:
                raise NetError(f"layer '{layer.name}' ({layer.type}): unknown bottom blob "
                               f"'{name}' (bottom index {j}): no earlier layer produces it")
            source_of[i, j] = last_top[name]
            uses[last_top[name]] += 1
        for j, name in enumerate(layer.top):
            last_top[name] = (i, j)
        for j, w in enumerate(layer.loss_weight):
            if w:
                loss_weight[i, j] = w
                uses[i, j] += 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    next_split = defaultdict(int)
    for i, layer in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(layer)
        for j, name in enumerate(layer.bottom):
            src = source_of[i, j]
            if uses[src] > 1:
                src_layer = param.layer[src[0]].name
                new.bottom[j] = split_blob_name(src_layer, name, src[1], next_split[src])
                next_split[src] += 1
        for j, name in enumerate(layer.top):
            n = uses[i, j]
            if n <= 1:
                continue
            split = out.layer.add()
            split.name = split_layer_name(layer.name, name, j)
            split.type = "Split"
            split.bottom.append(name)
            split.top.extend(split_blob_name(layer.name, name, j, k) for k in range(n))
            w = loss_weight.get((i, j), 0.0)
            if w:
                # The loss now flows through the split's first output.
                del new.loss_weight[:]
                split.loss_weight.extend([w] + [0.0] * (n - 1))
                next_split[i, j] += 1
    return out
