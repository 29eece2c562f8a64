"""How a Net shows itself in Jupyter: a table of its blobs and params, and its graph in SVG."""
import html

from ..proto import caffe_pb2


def display_param(net):
    """The net's NetParameter without the Split layers Net inserted for shared blobs.

    Net.param is the definition as run (phase-filtered, splits added); drawings are clearer
    with each automatic split folded back into the blob it copies.
    """
    param = caffe_pb2.NetParameter()
    param.CopyFrom(net.param)
    del param.layer[:]
    alias = {}
    for layer in net.param.layer:
        if layer.type == "Split" and layer.name.endswith("_split"):
            for top in layer.top:
                alias[top] = alias.get(layer.bottom[0], layer.bottom[0])
            continue
        copy = param.layer.add()
        copy.CopyFrom(layer)
        copy.bottom[:] = [alias.get(b, b) for b in layer.bottom]
    return param


def net_svg(net, rankdir="TB"):
    """The net's graph as SVG text (caffe.draw), or None when graphviz is not installed."""
    import shutil
    if shutil.which("dot") is None:
        return None
    from ..draw import draw_net
    return draw_net(display_param(net), rankdir, "svg").decode("utf-8")


def _shape(blob):
    return " &times; ".join(str(d) for d in blob.shape) or "scalar"


def net_html(net, graph=True):
    """An HTML table of the net's layers, tops and params, followed by its SVG graph."""
    e = html.escape
    rows = []
    for name, layer, tops in zip(net._layer_names, net._layers, net.top_ids):
        blobs = "<br>".join(f"{e(net._blob_names[t])}: {_shape(net._blobs[t])}" for t in tops)
        params = "<br>".join(_shape(b) for b in layer.blobs)
        rows.append(f"<tr><td>{e(name)}</td><td>{e(layer.type)}</td><td>{blobs}</td>"
                    f"<td>{params}</td></tr>")
    count = sum(b.count() for layer in net._layers for b in layer.blobs)
    parts = [f"<div class='caffe-net'><b>Net '{e(net.name)}'</b>: {len(net._layers)} layers, "
             f"{len(net._blobs)} blobs, {count:,} learned parameters",
             "<table><thead><tr><th>layer</th><th>type</th><th>top blobs (shape)</th>"
             "<th>params (shape)</th></tr></thead><tbody>", *rows, "</tbody></table>"]
    svg = net_svg(net) if graph else None
    if svg:
        parts.append(f"<details><summary>graph</summary>{svg[svg.find('<svg'):]}</details>")
    parts.append("</div>")
    return "\n".join(parts)
