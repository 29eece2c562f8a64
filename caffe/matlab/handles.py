"""The objects matcaffe hands out as handles, and the checks a handle passes before use.

A matcaffe handle is BVLC's struct {ptr (uint64), init_key (double)}. Here `ptr` is not an
address but a number this table gives out: a handle that outlived its object (after
caffe.reset_all(), or a Blob of a deleted Net) can then only fail with a clear error, where
BVLC's gateway would follow a dangling pointer. `init_key` changes with every reset, as in
BVLC, so that handles from before a reset are refused even though their numbers might be
given out again.
"""
import random

from ..errors import CaffeError

KINDS = ("Solver", "Net", "Layer", "Blob")


class MatcaffeError(CaffeError):
    """An error for MATLAB, with the identifier (`caffe:...`) it is raised under there."""

    def __init__(self, identifier, message):
        super().__init__(message)
        self.identifier = identifier


def usage(text):
    return MatcaffeError("caffe:usage", f"Usage: {text}")


class Table:
    """id -> object, with each object's kind and owner (the Net of a Blob, the Solver of
    a Net), so that deleting an owner forgets everything it owned."""

    def __init__(self):
        self._rand = random.SystemRandom()
        self.reset()

    def reset(self):
        """Forget every object; returns (solvers, stand-alone nets) forgotten."""
        counts = (sum(1 for k, _, o in getattr(self, "_items", {}).values() if k == "Solver"),
                  sum(1 for k, _, o in getattr(self, "_items", {}).values()
                      if k == "Net" and o is None))
        self._items = {}        # id -> (kind, object, owner id or None)
        self._ids = {}          # (kind, id(object)) -> id
        self._next = 1
        # A new key makes every earlier handle stale (BVLC draws it at random too).
        self.init_key = float(self._rand.randrange(1, 2 ** 31))
        return counts

    def add(self, kind, obj, owner=None):
        """The id of obj (the same id each time it is asked for while it lives here)."""
        known = self._ids.get((kind, id(obj)))
        if known is not None:
            return known
        hid = self._next
        self._next += 1
        self._items[hid] = (kind, obj, owner)
        self._ids[(kind, id(obj))] = hid
        return hid

    def get(self, handle, kind):
        """The object a handle (('handle', id, key) from the gateway) names, checked."""
        if not (isinstance(handle, tuple) and len(handle) == 3 and handle[0] == "handle"):
            raise MatcaffeError("caffe:invalidHandle",
                                f"expected a {kind} handle (a struct with fields ptr and "
                                f"init_key), got {_describe(handle)}")
        _, hid, key = handle
        if key != self.init_key:
            raise MatcaffeError("caffe:invalidHandle",
                                f"this {kind} handle is stale: it was made before "
                                f"caffe.reset_all() (or in another session of the gateway); "
                                f"the object is gone, make it again")
        item = self._items.get(hid)
        if item is None:
            raise MatcaffeError("caffe:invalidHandle",
                                f"this {kind} handle names an object that was deleted (its "
                                f"Net or Solver was deleted); make it again")
        if item[0] != kind:
            raise MatcaffeError("caffe:invalidHandle",
                                f"expected a {kind} handle, got a {item[0]} handle")
        return item[1]

    def owner(self, handle):
        return self._items[handle[1]][2]

    def delete(self, hid):
        """Forget hid and, recursively, everything it owns."""
        kind, obj, _ = self._items.pop(hid)
        self._ids.pop((kind, id(obj)), None)
        for child in [h for h, (_, _, o) in self._items.items() if o == hid]:
            if child in self._items:
                self.delete(child)

    def count(self, kind, standalone=False):
        return sum(1 for k, _, o in self._items.values()
                   if k == kind and (not standalone or o is None))


def _describe(value):
    if isinstance(value, tuple) and value:
        return f"a {value[1]} value" if value[0] in ("numeric", "other") else \
            f"a {value[0]} value"
    if isinstance(value, str):
        return "a char array"
    return type(value).__name__
