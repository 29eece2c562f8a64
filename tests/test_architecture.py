"""The package's shape: no import cycles, imports only downwards, no private names imported.

The import graph is read statically (ast) from every module under caffe/: each `import` and
`from ... import` that names a caffe module, at module level and inside functions alike, since
a function-level import that closes a cycle is still a cycle, only a later one. An edge goes to
the module named (`from .data import db` -> caffe.data.db, `from .db import x` -> caffe.data.db);
the parent packages that Python also initializes on the way are not edges, or every module
would sit in a cycle with caffe/__init__.py. That file is the public facade: it imports
everything, so no module may import it at module level; inside a function (to read
caffe.__version__, say) it is allowed and left out of the graph. docs/architecture.md draws
the layers below.
"""
import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1] / "caffe"

# The layers of the package, lowest first: a module may import its own layer and those below.
LAYERS = [
    ("core", ["caffe.threads", "caffe.thread_policy", "caffe._version", "caffe.errors", "caffe._optional", "caffe.files",
              "caffe.memory", "caffe.proto", "caffe.common", "caffe.blob", "caffe.blob_proto",
              "caffe.hdf5", "caffe.filler", "caffe.formats", "caffe.upgrade", "caffe.net_param",
              "caffe.child_process", "caffe.log_text", "caffe.net_dialects",
              "caffe.fork_names", "caffe.net_args"]),
    ("data and processes", ["caffe.data", "caffe.parallel"]),
    ("layer", ["caffe.layer"]),
    ("layer catalog", ["caffe.layers", "caffe.testing"]),
    ("net", ["caffe.net", "caffe.net_plan", "caffe.net_inference", "caffe.net_guard",
             "caffe.net_spec", "caffe.coord_map"]),
    ("on top of nets", ["caffe.solvers", "caffe.pycaffe", "caffe.export", "caffe.io",
                        "caffe.classifier", "caffe.detector", "caffe.draw", "caffe.zoo",
                        "caffe.vis", "caffe.view"]),
    ("commands", ["caffe.tools", "caffe.spark", "caffe.runtime", "caffe.__main__",
                  "caffe.matlab"]),
]
# Imports that go up a layer, each inside a function, each for a reason.
UPWARD = {
    ("caffe.layers.recurrent", "caffe.net"):
        "RNN and LSTM run an unrolled inner Net, as Caffe's RecurrentLayer does",
    ("caffe.layers", "caffe.net_spec"):
        "caffe.layers.Convolution(...) is NetSpec's layer function, as in BVLC's pycaffe",
    ("caffe.net", "caffe.vis.notebook"):
        "Jupyter's display of a Net (_repr_html_/_repr_svg_) draws it only when shown",
    ("caffe.net_inference", "caffe.export.graph"):
        "the inference program runs layers through the torch exporter's converters",
    ("caffe.net_inference", "caffe.export.torch_module"):
        "the inference program runs layers through the torch exporter's converters",
    ("caffe.testing.inference_check", "caffe.net_inference"):
        "check_inference compares a user's net's program with its plain forward",
}


def _modules():
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        mods[".".join(parts)] = (path, is_package)
    return mods


MODULES = _modules()


def _owner(name):
    """The innermost caffe module that `name` (a module or a name in one) belongs to."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(name):
    """[(imported caffe module, inside a function?)] of module `name`."""
    path, is_package = MODULES[name]
    package = name if is_package else name.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function = True
        if isinstance(node, ast.Import):
            found.extend((_owner(a.name), in_function) for a in node.names
                         if a.name == "caffe" or a.name.startswith("caffe."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base == "caffe" or base.startswith("caffe."):
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.append((full if full in MODULES else _owner(base), in_function))
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(ast.parse(path.read_text(), str(path)), False)
    return [(target, lazy) for target, lazy in found if target != name]


IMPORTS = {name: _imports(name) for name in MODULES}


def _layer_of(name):
    for level, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{name} is in no layer of tests/test_architecture.py's LAYERS: add it "
                         f"(and to docs/architecture.md)")


def test_every_module_has_a_layer():
    for name in MODULES:
        if name != "caffe":
            _layer_of(name)


def test_nothing_imports_the_facade_at_module_level():
    offenders = [name for name, imports in IMPORTS.items()
                 for target, lazy in imports if target == "caffe" and not lazy]
    assert not offenders, f"modules importing caffe/__init__.py at module level: {offenders}"


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycles():
    # The listed upward imports run inside functions, after both modules are loaded (the
    # Net that a recurrent layer builds imports the catalog that holds it): not cycles.
    graph = {name: {t for t, lazy in imports if t != "caffe" and not (lazy and (name, t) in UPWARD)}
             for name, imports in IMPORTS.items()}
    graph.pop("caffe")
    cycles = _cycles(graph)
    details = [" ; ".join(f"{m} -> {sorted(t for t in graph[m] if t in c)}" for m in c)
               for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(details)


def test_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_imports_go_down_the_layers():
    wrong = []
    for name, imports in IMPORTS.items():
        if name == "caffe":
            continue
        for target, lazy in imports:
            if target == "caffe" or _layer_of(target) <= _layer_of(name):
                continue
            if lazy and (name, target) in UPWARD:
                continue
            wrong.append(f"{name} ({LAYERS[_layer_of(name)][0]}) imports {target} "
                         f"({LAYERS[_layer_of(target)][0]}){'' if lazy else ' at module level'}")
    assert not wrong, "imports that go up a layer:\n" + "\n".join(wrong)


def test_upward_exceptions_are_still_needed():
    for name, target in UPWARD:
        assert (target, True) in IMPORTS.get(name, []), f"{name} no longer imports {target}"


def _private_imports(name):
    """The names a module imports from another caffe module that are private to it (one
    leading underscore): a module's private names may change without notice."""
    path, is_package = MODULES[name]
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                            + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base != "caffe" and not base.startswith("caffe."):
            continue
        for alias in node.names:
            private = alias.name.startswith("_") and not alias.name.startswith("__")
            # A package's private submodule (caffe._optional) is the package's to share.
            if private and f"{base}.{alias.name}" not in MODULES:
                found.append(f"{name} imports {alias.name} from {base}")
    return found


def test_no_module_imports_another_modules_private_names():
    found = [line for name in MODULES for line in _private_imports(name)]
    assert not found, "private names imported across modules:\n" + "\n".join(found)
