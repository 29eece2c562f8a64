"""A net in the browser: its graph with every layer's parameters and blob shapes.

`caffe view model.prototxt [-weights w.caffemodel]` builds the net with caffe.Net (so the
shapes shown are the ones this package computes), draws it with graphviz (caffe.draw) as
SVG and serves one self-contained page on 127.0.0.1: a search box that highlights and
steps through matching layers and blobs, zoom (buttons, Ctrl+wheel, fit), and a panel with
the selected layer's definition, its bottom/top shapes and its learned blobs.

Netron (`pip install netron`) reads Caffe prototxts too and `caffe view -netron` hands the
files to it; it shows the definition and the weights but not the blob shapes a net
computes, which is why the graphviz page is the default.
"""
import base64
import hashlib
import html
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import text_format

from .. import formats
from ..draw import get_pydot_graph, quote_label
from ..errors import CaffeError
from ..net import Net
from ..net_param import filter_net
from ..proto import caffe_pb2
from ..vis.notebook import display_param

_PAGE = os.path.join(os.path.dirname(__file__), "page.html")


def _shape(blob):
    return " \u00d7 ".join(str(d) for d in blob.shape) or "scalar"


def _stats(blob):
    data = blob.data.double()
    if not data.numel():
        return ""
    return f"mean {float(data.mean()):.4g}, std {float(data.std()) if data.numel() > 1 else 0:.4g}"


def describe(net, show_stats=False):
    """(display NetParameter, {graphviz node name: details}) for the page's panel."""
    param = display_param(net)
    blobs = dict(zip(net._blob_names, net._blobs))
    layers = dict(zip(net._layer_names, net._layers))
    nodes = {}
    for layer in param.layer:
        impl = layers.get(layer.name)
        shown = caffe_pb2.LayerParameter()
        shown.CopyFrom(layer)
        del shown.blobs[:]                      # weights from a model file: not text to read
        learned = []
        for i, b in enumerate(impl.blobs if impl is not None else []):
            learned.append([f"blob {i}", _shape(b), _stats(b) if show_stats else ""])
        nodes[f"{layer.name}_{layer.type}"] = {
            "kind": "layer", "name": layer.name, "type": layer.type,
            "bottoms": [[b, _shape(blobs[b]) if b in blobs else "?"] for b in layer.bottom],
            "tops": [[t, _shape(blobs[t]) if t in blobs else "?"] for t in layer.top],
            "params": learned, "text": text_format.MessageToString(shown)}
        for name in list(layer.bottom) + list(layer.top):
            nodes.setdefault(f"{name}_blob", {
                "kind": "blob", "name": name,
                "shape": _shape(blobs[name]) if name in blobs else "?"})
    return param, nodes


def graph_svg(param, nodes, rankdir="TB"):
    """The graphviz SVG of param, blob nodes labelled with their computed shapes."""
    graph = get_pydot_graph(param, rankdir, keyed=True)
    for key, info in nodes.items():
        if info["kind"] != "blob":
            continue
        for node in graph.get_node(quote_label(key)):
            label = quote_label(info["name"])[:-1] + "\\n" + info["shape"].replace("\u00d7", "x") + '"'
            node.set("label", label)
    import shutil
    if shutil.which("dot") is None:
        raise CaffeError("caffe view draws the graph with graphviz's `dot`, which is not "
                         "installed (apt-get install graphviz); or use -netron")
    try:
        svg = graph.create(format="svg").decode("utf-8")
    except Exception as e:       # pydot reports dot's failures as assorted exception types
        raise CaffeError(f"graphviz could not draw the net: {e}") from None
    return svg[svg.find("<svg"):]


def _template():
    with open(_PAGE, encoding="utf-8") as f:
        return f.read()


def _python_layers(model, phase):
    """The Python layers a model file would build in `phase`, found without importing them."""
    param = formats.read_net_param(model)
    param.state.phase = phase
    return [layer for layer in filter_net(param).layer if layer.type == "Python"], param


def describe_param(param):
    """describe() for a definition that is not built: no shapes, no learned blobs."""
    nodes = {}
    for layer in param.layer:
        shown = caffe_pb2.LayerParameter()
        shown.CopyFrom(layer)
        del shown.blobs[:]
        nodes[f"{layer.name}_{layer.type}"] = {
            "kind": "layer", "name": layer.name, "type": layer.type,
            "bottoms": [[b, "?"] for b in layer.bottom], "tops": [[t, "?"] for t in layer.top],
            "params": [], "text": text_format.MessageToString(shown)}
        for name in list(layer.bottom) + list(layer.top):
            nodes.setdefault(f"{name}_blob", {"kind": "blob", "name": name, "shape": "?"})
    return nodes


def _json_for_script(value):
    # Inside <script type="application/json">: no '<' may close the element, and '&' and
    # '>' are escaped too so that the text means the same to every HTML parser.
    text = json.dumps(value)
    for ch, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                     ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, code)
    return text


_PLACEHOLDER = re.compile(r"\{\{(TITLE|SVG|DATA|CSP)\}\}")
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def content_security_policy(page_template):
    """The page's policy: only its own inline script runs (by hash); no inline handlers
    (onerror=...), no other script, frame, form or network access."""
    digests = [base64.b64encode(hashlib.sha256(code.encode("utf-8")).digest()).decode()
               for code in _SCRIPT.findall(page_template)]
    scripts = " ".join(f"'sha256-{d}'" for d in digests)
    return (f"default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; "
            f"img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def fill_page(template, title, svg, data):
    """The template with every placeholder filled in one pass: a name that spells a
    placeholder ({{DATA}}) stays text, since filled text is never searched again."""
    values = {"TITLE": html.escape(title), "SVG": svg, "DATA": _json_for_script(data),
              "CSP": html.escape(content_security_policy(template))}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def build_page(model, weights=None, phase=caffe_pb2.TEST, rankdir="TB",
               allow_python_layers=False):
    """The viewer's HTML page for a model file (and optional weights) as a string.

    A net with Python layers is drawn from its definition alone (no shapes) unless
    allow_python_layers: building it would import and run the modules they name.
    """
    python, definition = _python_layers(model, phase)
    if python and not allow_python_layers:
        param = filter_net(definition)
        nodes, count = describe_param(param), None
        note = (f"shapes not computed: Python layer '{python[0].name}' would run code from "
                f"module '{python[0].python_param.module}' (-allow_python_layers to run it)"
                + ("; weights not read" if weights else ""))
        name = definition.name
    else:
        net = Net(model, phase)
        if weights:
            net.copy_from(weights)
        param, nodes = describe(net, show_stats=bool(weights))
        count = sum(b.count() for layer in net._layers for b in layer.blobs)
        note, name = "", net.name
    svg = graph_svg(param, nodes, rankdir)
    title = f"{name or os.path.basename(model)}: {len(param.layer)} layers"
    if count is not None:
        title += f", {count:,} learned parameters" + (
            f", weights {os.path.basename(weights)}" if weights else "")
    if note:
        title += f" ({note})"
    template = _template()
    data = {"nodes": nodes, "order": [f"{l.name}_{l.type}" for l in param.layer]}
    return fill_page(template, title, svg, data)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path not in ("/", "/index.html"):
            self.send_error(404)
            return
        body = self.server.page.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Security-Policy", self.server.policy)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(page, host="127.0.0.1", port=0, background=False):
    """Serve the page; returns the server (its URL is server.url). Blocks unless background."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.page = page
    # The template's policy, not one computed from the filled page: hashes only the
    # scripts pycaffe wrote.
    server.policy = content_security_policy(_template())
    server.url = f"http://{host}:{server.server_address[1]}/"
    if background:
        threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    else:
        server.serve_forever()
    return server


__all__ = ["build_page", "content_security_policy", "describe", "describe_param", "fill_page",
           "graph_svg", "serve"]
