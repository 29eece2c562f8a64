"""Draw a NetParameter as a graph, as pycaffe's caffe.draw does (pydot + graphviz).

Layers are boxes (record nodes) labelled with their name, type and, for convolution and
pooling, kernel/stride/pad; blobs are grey octagons; in-place layers are green. Colours:
Convolution/Deconvolution red, Pooling orange, InnerProduct purple, others blue. Edges
out of a layer carry its output size (num_output, or the batch size of a Data layer).
The graph's dot source is BVLC's, node for node: a layer node is named by its label, a
blob node by the blob's name, and a blob whose last mention is as a top has no style (an
ellipse), as BVLC draws it. Rendering to an image needs graphviz's `dot` program;
`.dot`/`.gv` files need only pydot.
"""
import re
import shutil

from . import formats
from ._optional import require
from .errors import CaffeError
from .proto import caffe_pb2

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
RANKDIRS = ("LR", "TB", "BT", "RL")
_SOURCE_FORMATS = ("dot", "gv")


class DrawError(CaffeError, ValueError):
    """The graph cannot be built or rendered (a ValueError, as pycaffe raised)."""


def _pydot():
    return require("pydot", extra="draw", feature="drawing nets")


def quote_label(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


# Graphviz keywords and port syntax (a:b) that an unquoted node name must not be; pydot
# leaves such names unquoted, which loses the node.
_DOT_KEYWORDS = {"node", "edge", "graph", "digraph", "subgraph", "strict"}
_PLAIN_ID = re.compile(r"[^:\"\\]+")


def _node_id(name):
    """A blob's node name: the name itself where pydot quotes it correctly (BVLC's), quoted
    here where pydot would not."""
    if _PLAIN_ID.fullmatch(name) and name.lower() not in _DOT_KEYWORDS:
        return name
    return quote_label(name)


def _record_text(text):
    # Record labels give {}|<> a meaning of their own; a layer name must not.
    for ch in "\\{}|<>\"":
        text = text.replace(ch, "\\" + ch)
    return text


def get_pooling_types_dict():
    """{pool enum value: its name}, e.g. {0: 'MAX', 1: 'AVE', 2: 'STOCHASTIC'}."""
    desc = caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR
    return {v.number: name for name, v in desc.values_by_name.items()}


def get_edge_label(layer):
    """The label of the edges out of a layer: its output size where it has one."""
    if layer.type == "Data":
        return "Batch " + str(layer.data_param.batch_size)
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_label(layer, rankdir, display_lrm=False):
    """A layer's node label: name, (type), spatial settings and optionally lr_mults, one
    per line for horizontal layouts and space-separated for vertical ones."""
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    parts = [_record_text(layer.name)]
    if layer.type == "Pooling":
        parts.append("(%s %s)" % (layer.type,
                                  get_pooling_types_dict()[layer.pooling_param.pool]))
    else:
        parts.append("(%s)" % _record_text(layer.type))
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        if layer.type == "Pooling":
            p = layer.pooling_param
            kernel, stride, pad = p.kernel_size, p.stride, p.pad
        else:
            p = layer.convolution_param
            kernel = p.kernel_size[0] if len(p.kernel_size) else 1
            stride = p.stride[0] if len(p.stride) else 1
            pad = p.pad[0] if len(p.pad) else 0
        parts.append(separator.join(["kernel size: %d" % kernel, "stride: %d" % stride,
                                     "pad: %d" % pad]))
    if display_lrm and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
        lrm0, lrm1 = get_layer_lr_mult(layer)
        if any([lrm0, lrm1]):
            parts.append("lr mult: %.1f, %.1f" % (lrm0, lrm1))
    return '"%s"' % separator.join(parts)


def get_layer_lr_mult(layer):
    """(weights' lr_mult, bias's lr_mult) of a Convolution, Deconvolution or InnerProduct
    layer; 1.0 where no param spec gives one."""
    if layer.type not in ("Convolution", "Deconvolution", "InnerProduct"):
        raise DrawError("%s layers do not have a learning rate multiplier" % layer.type)
    mults = [spec.lr_mult for spec in layer.param]
    if len(mults) > 2:
        raise DrawError(f"layer {layer.name}: {len(mults)} param specs; a "
                        f"{layer.type} layer has 2 (weights and bias), so its learning rate "
                        f"multipliers cannot be drawn")
    return tuple(mults + [1.0] * (2 - len(mults)))


def choose_color_by_layertype(layertype):
    """Fill colour of a layer node."""
    return {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
            "InnerProduct": "#CC33FF"}.get(layertype, "#6495ED")


def _in_phase(layer, phase):
    """Does the layer run in `phase`? (A rule without a phase holds in every phase.)"""
    if len(layer.include) and len(layer.exclude):
        raise DrawError(f"layer {layer.name} has both include and exclude specified.")
    if len(layer.include):
        return any(not r.HasField("phase") or r.phase == phase for r in layer.include)
    return not any(not r.HasField("phase") or r.phase == phase for r in layer.exclude)


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False,
                    keyed=False):
    """The net as a pydot graph, with BVLC's nodes and edges.

    caffe_net: a caffe_pb2.NetParameter; rankdir: 'LR', 'TB', 'BT' or 'RL';
    phase: caffe.TRAIN or caffe.TEST to draw only that phase's layers, None for all;
    keyed: name the nodes '<layer>_<type>' and '<blob>_blob', labelled, every blob an
    octagon (caffe view finds its nodes by these names), instead of BVLC's naming.
    """
    if rankdir not in RANKDIRS:
        raise DrawError(f"rankdir must be one of {', '.join(RANKDIRS)}, got {rankdir!r}")
    pydot = _pydot()
    name = caffe_net.name or "Net"
    graph_name = quote_label(name) if keyed else _node_id(name)
    graph = pydot.Dot(graph_name, graph_type="digraph", rankdir=rankdir)
    nodes, edges = {}, []

    def blob_node(name, style):
        key = name + "_blob"
        if keyed:
            if key not in nodes:
                nodes[key] = pydot.Node(quote_label(key), label=quote_label(name), **BLOB_STYLE)
        else:
            # As BVLC: each mention makes the node anew, so a blob last seen as a top has
            # no style (its first mention fixes its place in the node order).
            nodes[key] = pydot.Node(_node_id(name), **style)
        return key

    for layer in caffe_net.layer:
        if phase is not None and not _in_phase(layer, phase):
            continue
        key = "%s_%s" % (layer.name, layer.type)
        in_place = len(layer.bottom) == 1 and len(layer.top) == 1 and \
            layer.bottom[0] == layer.top[0]
        style = dict(NEURON_LAYER_STYLE if in_place else LAYER_STYLE_DEFAULT)
        if not in_place:
            style["fillcolor"] = choose_color_by_layertype(layer.type)
        label = get_layer_label(layer, rankdir, display_lrm)
        nodes[key] = pydot.Node(quote_label(key), label=label, **style) if keyed else \
            pydot.Node(label, **style)
        for bottom in layer.bottom:
            edges.append((blob_node(bottom, BLOB_STYLE), key, '""'))
        for top in layer.top:
            edges.append((key, blob_node(top, {}),
                          get_edge_label(layer) if label_edges else '""'))
    for node in nodes.values():
        graph.add_node(node)
    for src, dst, label in edges:
        graph.add_edge(pydot.Edge(nodes[src], nodes[dst], label=label))
    return graph


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """The drawing as bytes in format `ext` (png, svg, pdf, ... or dot for the source)."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    if ext in _SOURCE_FORMATS:
        return graph.to_string().encode()
    if shutil.which("dot") is None:
        raise DrawError(f"rendering {ext} needs graphviz's `dot` program, which is not "
                        f"installed (apt-get install graphviz); a .dot file needs no graphviz")
    try:
        return graph.create(format=ext)
    except Exception as e:   # pydot reports dot's failures as assorted exception types
        raise DrawError(f"graphviz could not render format '{ext}': {e}") from None


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Draw to `filename`; its extension picks the format (.png, .svg, .pdf, .dot, ...)."""
    filename = str(filename)
    base = filename.rsplit("/", 1)[-1]
    if "." not in base:
        raise DrawError(f"{filename}: no extension to choose the image format by "
                        f"(.png, .svg, .pdf, .dot)")
    ext = base.rsplit(".", 1)[1].lower()
    formats.atomic_write(filename, draw_net(caffe_net, rankdir, ext, phase, display_lrm))
