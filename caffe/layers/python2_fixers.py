"""fissix fixers for what 2to3 leaves alone but Python 2 layers rely on (caffe.layers.python2).

Each rewrites to a helper that caffe.layers.python2 puts in the translated module's namespace
(`__caffe_div__`, `__caffe_idiv__`, `__caffe_index__`), or to plain Python 3.
"""
from fissix import fixer_base, pytree
from fissix.fixer_util import Call, Comma, Name, does_tree_import
from fissix.pgen2 import token
from fissix.pygram import python_symbols as syms


def _float_literal(node):
    if node.type != token.NUMBER:
        return False
    text = node.value.lower()
    return not text.startswith("0x") and any(c in text for c in ".ej")


def _int_literal(node):
    if node.type == syms.factor and node.children[0].value in "+-":
        node = node.children[1]
    return node.type == token.NUMBER and not _float_literal(node)


def _call(helper, *args, prefix=""):
    items = []
    for arg in args:
        if items:
            items.append(Comma())
            arg.prefix = " "
        else:
            arg.prefix = ""
        items.append(arg)
    return Call(Name(helper), items, prefix=prefix)


class FixClassicDivision(fixer_base.BaseFix):
    """`a / b` -> `__caffe_div__(a, b)` (floor division of integers, as in Python 2), unless the
    module imports division from __future__ or an operand is a float literal."""

    PATTERN = "term< any* > | expr_stmt< any '/=' any >"

    def start_tree(self, tree, filename):
        super().start_tree(tree, filename)
        try:
            self.skip = does_tree_import("__future__", "division", tree)
        except ValueError:          # a module of comments only: nothing to fix
            self.skip = True

    def transform(self, node, results):
        if self.skip:
            return None
        if node.type == syms.expr_stmt:
            target, _, value = node.children
            if _float_literal(value):
                return None
            call = _call("__caffe_idiv__", target.clone(), value.clone(), prefix=" ")
            return pytree.Node(syms.expr_stmt,
                               [target.clone(), pytree.Leaf(token.EQUAL, "=", prefix=" "), call],
                               prefix=node.prefix)
        children = [c.clone() for c in node.children]
        if not any(c.type == token.SLASH for c in children):
            return None
        current = [children[0]]
        for op, operand in zip(children[1::2], children[2::2]):
            left = current[0] if len(current) == 1 else pytree.Node(syms.term, current)
            if op.type == token.SLASH and not (_float_literal(operand) or
                                               (len(current) == 1 and _float_literal(left))):
                current = [_call("__caffe_div__", left, operand)]
            else:
                current = current + [op, operand]
        new = current[0] if len(current) == 1 else pytree.Node(syms.term, current)
        new.prefix = node.prefix
        return new


class FixNumpyAliases(fixer_base.BaseFix):
    """`np.float` -> `float` and the other type aliases NumPy 1.24 removed."""

    ALIASES = {"float": "float", "int": "int", "bool": "bool", "object": "object",
               "complex": "complex", "str": "str", "long": "int", "unicode": "str"}
    PATTERN = ("power< ('np' | 'numpy') trailer< '.' ('float' | 'int' | 'bool' | 'object' | "
               "'complex' | 'str' | 'long' | 'unicode') > any* >")

    def transform(self, node, results):
        attr = node.children[1].children[1].value
        name = Name(self.ALIASES[attr], prefix=node.prefix)
        rest = [c.clone() for c in node.children[2:]]
        if not rest:
            return name
        return pytree.Node(syms.power, [name] + rest, prefix=node.prefix)


class FixYamlLoad(fixer_base.BaseFix):
    """One-argument `yaml.load` -> `yaml.safe_load`: PyYAML 6 requires a Loader, and a
    layer's param_str is data (it never constructs Python objects)."""

    PATTERN = "power< 'yaml' trailer< '.' name='load' > trailer< '(' arg=any ')' > any* >"

    def transform(self, node, results):
        if results["arg"].type == syms.arglist:
            return None             # a Loader is given: leave it to the author
        results["name"].value = "safe_load"
        node.changed()
        return None


class FixFloatSliceBounds(fixer_base.BaseFix):
    """`a[lo:hi]` -> `a[__caffe_index__(lo):__caffe_index__(hi)]` for non-literal bounds:
    NumPy before 1.12 truncated float bounds (py-faster-rcnn slices with `4 * cls`)."""

    PATTERN = "subscript< any* > | sliceop< any* >"

    def transform(self, node, results):
        changed = False
        for child in list(node.children):
            if child.type in (token.COLON, syms.sliceop) or _int_literal(child):
                continue
            if child.type == token.NAME and child.value == "None":
                continue
            child.replace(_call("__caffe_index__", child.clone(), prefix=child.prefix))
            changed = True
        if changed:
            node.changed()
        return None


FIXERS = [FixClassicDivision, FixNumpyAliases, FixYamlLoad, FixFloatSliceBounds]
