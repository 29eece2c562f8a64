"""Reference pages generated from the code, so that they cannot drift from it.

    python docs/gen_reference.py OUT_DIR     # write the pages (mkdocs builds them itself)

- reference/layers.md: every type in caffe.layer_type_list(), with its class docstring (the
  formula), its blob counts and the fields of its parameter messages (types, defaults and the
  comments of caffe/proto/caffe.proto).
- reference/solver.md: every solver type, learning-rate policy (read from
  Solver.get_learning_rate's source) and SolverParameter field.
- reference/tools.md: the --help of every command-line tool.
docs/hooks.py hands these to mkdocs at build time.
"""
import ast
import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import caffe  # noqa: E402
from caffe.layer import LAYER_REGISTRY  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402

PROTO = ROOT / "caffe" / "proto" / "caffe.proto"

# Parameter fields of LayerParameter a type reads beyond the one named after it.
EXTRA_PARAMS = {
    "Convolution": ["convolution_param"], "Deconvolution": ["convolution_param"],
    "Im2col": ["convolution_param"], "RNN": ["recurrent_param"], "LSTM": ["recurrent_param"],
    "SoftmaxWithLoss": ["softmax_param", "loss_param"],
}
LOSS_PARAM = {"EuclideanLoss", "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss",
              "SigmoidCrossEntropyLoss", "ContrastiveLoss"}
TRANSFORM_PARAM = {"Data", "ImageData", "WindowData", "MemoryData"}
# LayerParameter fields every layer has, documented once.
COMMON_FIELDS = ["name", "type", "bottom", "top", "phase", "loss_weight", "param", "blobs",
                 "propagate_down", "include", "exclude"]

TYPE_NAMES = {
    1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 8: "bool", 9: "string",
    12: "bytes", 13: "uint32", 17: "sint32", 18: "sint64",
}


# -- caffe.proto comments --------------------------------------------------------------------
def proto_comments(text=None):
    """{message or enum name (dotted when nested): {"": its comment, field or value: comment}}
    from the // comments before a declaration and after it on the same line."""
    text = PROTO.read_text() if text is None else text
    comments, stack, pending = {}, [], []
    field = re.compile(r"(?:optional|repeated|required)\s+[\w.]+\s+(\w+)\s*=\s*\d+[^;]*;"
                       r"\s*(?://\s*(.*))?$")
    value = re.compile(r"(\w+)\s*=\s*-?\d+[^;]*;\s*(?://\s*(.*))?$")
    for line in text.splitlines():
        s = line.strip()
        if not s:
            pending = []
        elif s.startswith("//"):
            pending.append(s[2:].strip())
        elif re.match(r"(message|enum)\s+\w+\s*\{", s):
            stack.append(s.split()[1])
            comments[".".join(stack)] = {"": " ".join(pending)}
            pending = []
        elif s.startswith("}"):
            stack.pop()
            pending = []
        elif stack:
            m = field.match(s) or value.match(s)
            if m:
                note = " ".join(pending + [m.group(2) or ""]).strip()
                comments[".".join(stack)][m.group(1)] = note
            pending = []
    return comments


def _name(descriptor):
    """A message's or enum's dotted name inside the caffe package."""
    return descriptor.full_name.split(".", 1)[1]


def _anchor(name):
    return name.lower().replace(".", "")


def _cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def _type(field, link_messages):
    if field.message_type is not None:
        name = _name(field.message_type)
        linked = link_messages is True or name in (link_messages or ())
        return f"[{name}](#{_anchor(name)})" if linked else name
    if field.enum_type is not None:
        return "enum " + " / ".join(v.name for v in field.enum_type.values)
    return TYPE_NAMES.get(field.type, str(field.type))


def _default(field):
    if _repeated(field) or field.message_type is not None:
        return ""
    value = field.default_value
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f'"{value}"' if value else ""
    return str(value)


def _repeated(field):
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def fields_table(descriptor, comments, link_messages=True, only=None):
    """A markdown table of a message's fields: name, type, default, description."""
    notes = comments.get(_name(descriptor), {})
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for field in descriptor.fields:
        if only is not None and field.name not in only:
            continue
        kind = _type(field, link_messages)
        if _repeated(field):
            kind = "repeated " + kind
        rows.append(f"| `{field.name}` | {_cell(kind)} | {_cell(_default(field))} | "
                    f"{_cell(notes.get(field.name, ''))} |")
    return "\n".join(rows)


def referenced_messages(descriptors):
    """Messages reachable from `descriptors`' fields (not the descriptors themselves)."""
    seen, todo = {}, list(descriptors)
    while todo:
        d = todo.pop()
        for field in d.fields:
            m = field.message_type
            if m is not None and _name(m) not in seen and m not in descriptors:
                seen[_name(m)] = m
                todo.append(m)
    return [seen[k] for k in sorted(seen)]


# -- layers ----------------------------------------------------------------------------------
def layer_params(layer_type):
    """The LayerParameter fields (X_param) a layer type reads."""
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    own = [n for n in fields if n.endswith("_param") and
           n[:-len("_param")].replace("_", "") == layer_type.lower()]
    names = EXTRA_PARAMS.get(layer_type, own)
    if layer_type in LOSS_PARAM:
        names = names + ["loss_param"]
    if layer_type in TRANSFORM_PARAM:
        names = names + ["transform_param"]
    return names


def _counts(cls):
    def describe(what, exact, lo, hi):
        if exact >= 0:
            return f"{exact} {what}" if exact != 1 else f"1 {what[:-1]}"
        if lo >= 0 and hi >= 0:
            return f"{lo} to {hi} {what}"
        if lo >= 0:
            return f"at least {lo} {what[:-1] if lo == 1 else what}"
        if hi >= 0:
            return f"at most {hi} {what}"
        return f"any number of {what}"
    bottoms = describe("bottoms", cls.exact_num_bottom_blobs, cls.min_bottom_blobs,
                       cls.max_bottom_blobs)
    tops = describe("tops", cls.exact_num_top_blobs, cls.min_top_blobs, cls.max_top_blobs)
    extra = "; as many tops as bottoms" if cls.equal_num_bottom_top_blobs else ""
    return f"{bottoms}, {tops}{extra}"


def _docstring(cls):
    return inspect.cleandoc(cls.__doc__ or "").strip() or "(no description)"


def layers_page():
    comments = proto_comments()
    types = caffe.layer_type_list()
    out = ["# Layer catalog", "",
           "Generated from the code: every layer type `caffe.layer_type_list()` registers, with "
           "its formula (the class docstring), the blobs it takes and the fields of its "
           "parameter messages, as `caffe/proto/caffe.proto` declares them. Every layer also "
           "has the [common fields](#common-layer-fields).", "",
           "| type | family | summary |", "|---|---|---|"]
    for t in types:
        cls = LAYER_REGISTRY[t]
        family = cls.__module__.rsplit(".", 1)[-1]
        summary = " ".join(_docstring(cls).split("\n\n")[0].replace("`", "").split())
        out.append(f"| [{t}](#{_anchor(t)}) | {family} | `{_cell(summary)}` |")
    used = []
    layer_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for t in types:
        cls = LAYER_REGISTRY[t]
        out += ["", f"## {t}", "", "```text", _docstring(cls), "```", "",
                f"Blobs: {_counts(cls)}. Implemented by `{cls.__module__}.{cls.__name__}`."]
        for name in layer_params(t):
            message = layer_fields[name].message_type
            used.append(message)
            note = comments.get(_name(message), {}).get("")
            out += ["", f"`{name}` ({_name(message)})" + (f": {note}" if note else ""), "",
                    fields_table(message, comments)]
        if not layer_params(t):
            out += ["", "No parameters of its own."]
    layer = caffe_pb2.LayerParameter.DESCRIPTOR
    out += ["", "## Common layer fields", "",
            "Fields of `LayerParameter` that every layer has.", "",
            fields_table(layer, comments, only=COMMON_FIELDS)]
    out += ["", "## Messages used by the parameters"]
    unique = {_name(m): m for m in used + [layer]}
    for message in referenced_messages(list(unique.values())):
        name = _name(message)
        if name in unique and name != "LayerParameter":
            continue
        out += ["", f"### {name}", "", comments.get(name, {}).get("") or "", "",
                fields_table(message, comments)]
    return "\n".join(out) + "\n"


# -- solvers ---------------------------------------------------------------------------------
class _Readable(ast.NodeTransformer):
    """p.base_lr -> base_lr, self.current_step -> step, it -> iter, math.exp -> exp."""

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id in ("p", "self", "math"):
            return ast.Name("step" if node.attr == "current_step" else node.attr, ast.Load())
        return self.generic_visit(node)

    def visit_Name(self, node):
        return ast.Name("iter", ast.Load()) if node.id == "it" else node


def lr_policies():
    """{policy: the rate expression} read from Solver.get_learning_rate's source."""
    from caffe.solvers import Solver
    tree = ast.parse(textwrap.dedent(inspect.getsource(Solver.get_learning_rate)))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and \
                isinstance(node.test.comparators[0], ast.Constant):
            returns = [n for statement in node.body for n in ast.walk(statement)
                       if isinstance(n, ast.Return)]
            if returns:
                expr = _Readable().visit(returns[-1].value)
                found[node.test.comparators[0].value] = ast.unparse(expr)
    return found


def solver_page():
    from caffe.solvers import SOLVER_REGISTRY
    comments = proto_comments()
    out = ["# Solver parameters", "",
           "Generated from the code: the solver types `caffe.get_solver` knows, the learning "
           "rate policies as `Solver.get_learning_rate` computes them, and every field of "
           "`SolverParameter` in `caffe/proto/caffe.proto`.", "",
           "## Solver types (`type`)", "", "| type | class | update rule |", "|---|---|---|"]
    for name in sorted(SOLVER_REGISTRY):
        cls = SOLVER_REGISTRY[name]
        rule = " ".join(_docstring(cls).split())
        out.append(f'| `"{name}"` | `{cls.__module__}.{cls.__name__}` | {_cell(rule)} |')
    out += ["", "`g` is the gradient after clipping, `iter_size` normalisation and weight decay; "
            "`lr` is the rate below times the blob's `lr_mult`.", "",
            "## Learning rate policies (`lr_policy`)", "", "| policy | rate at iteration `iter` |",
            "|---|---|"]
    for policy, expr in lr_policies().items():
        out.append(f'| `"{policy}"` | `{_cell(expr)}` |')
    documented = ("NetState",)
    out += ["", "`step` counts the steps taken so far (`multistep`: the `stepvalue` entries "
            "passed).", "", "## SolverParameter fields", "",
            "The nets themselves (`net_param`, `train_net_param`, `test_net_param`) are "
            "NetParameters, as in a `.prototxt` model file.", "",
            fields_table(caffe_pb2.SolverParameter.DESCRIPTOR, comments, documented)]
    solver = caffe_pb2.SolverParameter.DESCRIPTOR
    messages = [m for m in referenced_messages([solver]) if _name(m) in documented]
    for message in messages:
        name = _name(message)
        out += ["", f"### {name}", "", comments.get(name, {}).get("") or "", "",
                fields_table(message, comments, link_messages=False)]
    return "\n".join(out) + "\n"


# -- tools -----------------------------------------------------------------------------------
def tools_page():
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    scripts = re.findall(r'^(\S+)\s*=\s*"([\w.]+):(\w+)"', section, re.M)
    out = ["# Command-line tools", "",
           "Generated from the tools' own argument parsers. Flags are gflags-style, as in BVLC "
           "Caffe: `-flag value`, `--flag value`, `-flag=value` and `--flag=value` all work."]
    modules = [(name, module) for name, module, _ in scripts]
    if not any(m == "caffe.tools.export" for _, m in modules):
        modules.append(("caffe export", "caffe.tools.export"))
    for name, module_name in modules:
        module = importlib.import_module(module_name)
        make = getattr(module, "parser", None) or getattr(module, "_parser", None)
        try:
            parser = make() if make is not None else None
        except TypeError:            # a parser factory shared by several tools
            parser = None
        doc = inspect.cleandoc(module.__doc__ or "").split("\n\n")[0]
        out += ["", f"## {name}", "", doc.replace("\n", " ") if parser else "", ""]
        if parser is not None:
            parser.prog = name
            out += ["```text", parser.format_help().rstrip(), "```"]
        else:
            out += ["```text", inspect.cleandoc(module.__doc__ or "").strip(), "```"]
    return "\n".join(out) + "\n"


def pages():
    return {"reference/layers.md": layers_page(), "reference/solver.md": solver_page(),
            "reference/tools.md": tools_page()}


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "site_reference")
    for path, text in pages().items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text)
        print("wrote", out / path)
