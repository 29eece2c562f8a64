"""The Python half of the `caffe_` MEX gateway: BVLC matcaffe's command protocol on pycaffe.

The C gateway (caffe_.c) turns each `caffe_(command, args...)` into dispatch(command, args)
and turns the answer back into MATLAB values. Arguments arrive as:

    char array                  -> str
    handle struct (ptr, key)    -> ("handle", ptr, init_key)
    single array                -> ("single", memoryview of its memory, dims)  (valid during
                                   the call only: the gateway releases the view afterwards)
    double array                -> ("double", [values], dims)
    other numeric / logical     -> ("numeric", class name, dims)
    anything else               -> ("other", class name)

and answers are None (no output), str, a number, or a tagged tuple: ("handles", [ids], key),
("cellstr", [str]), ("column", [numbers]), ("row", [numbers]), ("single", float32 array,
dims), ("struct", [(field, value)]), ("print", text), or ("error", identifier, message) for
every failure, so that no Python exception ever crosses into the host.

MATLAB's column-major W x H x C x N array has the memory of Caffe's row-major N x C x H x W
blob, so data crosses with the dimensions reversed and no transpose.
"""
import os
import sys

from . import startup       # noqa: F401  (torch with its own BLAS, before anything loads it)
from .handles import MatcaffeError, Table, usage

import numpy as np  # noqa: E402

from .. import common  # noqa: E402
from ..blob import Blob  # noqa: E402
from ..blob_proto import blob_from_proto, blob_to_proto  # noqa: E402
from ..errors import (CaffeError, DataError, LayerSetupError, NetError,  # noqa: E402
                      OutOfMemoryError, ProtoError, SolverError, UpgradeError, WeightsError,
                      WriteError)
from ..formats import read_binaryproto, write_binary_proto  # noqa: E402
from ..proto import caffe_pb2  # noqa: E402
from ..tools.caffe_flags import BVLC_VERSION  # noqa: E402

TABLE = Table()
# pycaffe's error classes -> MATLAB identifiers (most specific first).
_IDENTIFIERS = [(ProtoError, "caffe:proto"), (UpgradeError, "caffe:upgrade"),
                (LayerSetupError, "caffe:layerSetup"), (NetError, "caffe:net"),
                (WeightsError, "caffe:weights"), (SolverError, "caffe:solver"),
                (DataError, "caffe:data"), (OutOfMemoryError, "caffe:outOfMemory"),
                (WriteError, "caffe:write"), (CaffeError, "caffe:error"),
                (FileNotFoundError, "caffe:fileNotFound"), (MemoryError, "caffe:outOfMemory")]


class Interrupted(Exception):
    """Ctrl-C during solve/step, raised between two iterations (the solver stays whole)."""


def _interrupt_pending():
    """Whether the host asked to interrupt (the gateway's own module; absent in plain Python,
    where a KeyboardInterrupt does the job)."""
    module = sys.modules.get("_matcaffe")
    return bool(module is not None and module.take_interrupt())


# -- argument checks ---------------------------------------------------------------------
def _check(ok, text):
    if not ok:
        raise usage(text)


def _is_struct(a):
    return isinstance(a, tuple) and a[:1] == ("handle",)


def _is_double(a):
    return isinstance(a, tuple) and a[:1] == ("double",)


def _file(path):
    """BVLC's mxCHECK_FILE_EXIST, naming the file."""
    if not os.path.isfile(path):
        raise MatcaffeError("caffe:fileNotFound", f"Could not open file {path}")
    return path


def _scalar(a):
    return a[1][0] if len(a[1]) == 1 else None


# -- encoders ----------------------------------------------------------------------------
def _array(array, shape):
    """A blob's values as MATLAB sees them: dims reversed, at least one."""
    dims = tuple(reversed(shape)) or (1,)
    return ("single", np.ascontiguousarray(array, dtype=np.float32), dims)


def _copy_in(blob, arg, diff):
    """An array from the host into the blob's data or diff: one copy, straight from the
    host's memory (the .m code checked the shape; this checks the count, as BVLC does)."""
    count = blob.count()
    numel = int(np.prod(arg[2])) if arg[2] else 0
    if numel != count:
        raise MatcaffeError("caffe:sizeMismatch", "number of elements in target blob doesn't "
                            f"match that in input mxArray ({numel} vs {count})")
    target = blob.diff_numpy() if diff else blob.data_numpy()
    np.copyto(target.reshape(-1), np.frombuffer(arg[1], dtype=np.float32, count=count))


def _handles(kind, objects, owner):
    return ("handles", [TABLE.add(kind, o, owner) for o in objects], TABLE.init_key)


# -- commands ----------------------------------------------------------------------------
def get_solver(*a):
    _check(len(a) == 1 and isinstance(a[0], str), "caffe_('get_solver', solver_file)")
    from ..solvers import get_solver as make
    solver = make(_file(a[0]))
    return _handles("Solver", [solver], None)


def delete_solver(*a):
    _check(len(a) == 1 and _is_struct(a[0]), "caffe_('delete_solver', hSolver)")
    TABLE.get(a[0], "Solver")
    TABLE.delete(a[0][1])


def _solver(*a, more=(), text=""):
    _check(len(a) == 1 + len(more) and _is_struct(a[0]) and
           all(test(x) for test, x in zip(more, a[1:])), text)
    return TABLE.get(a[0], "Solver")


def solver_get_attr(*a):
    solver = _solver(*a, text="caffe_('solver_get_attr', hSolver)")
    owner = a[0][1]
    return ("struct", [("hNet_net", _handles("Net", [solver.net], owner)),
                       ("hNet_test_nets", _handles("Net", list(solver.test_nets), owner))])


def solver_get_iter(*a):
    return float(_solver(*a, text="caffe_('solver_get_iter', hSolver)").iter)


def solver_get_max_iter(*a):
    return float(_solver(*a, text="caffe_('solver_get_max_iter', hSolver)").param.max_iter)


def solver_restore(*a):
    solver = _solver(*a, more=(lambda x: isinstance(x, str),),
                     text="caffe_('solver_restore', hSolver, snapshot_file)")
    solver.restore(_file(a[1]))


def solver_snapshot(*a):
    _solver(*a, text="caffe_('solver_snapshot', hSolver)").snapshot()


def _interruptible(solver, run):
    def check():
        if _interrupt_pending():
            raise Interrupted
        return previous() if previous is not None else "none"
    previous = solver.action_request_function
    solver.set_action_function(check)
    try:
        run()
    except (Interrupted, KeyboardInterrupt):
        raise MatcaffeError("caffe:interrupted",
                            f"interrupted (Ctrl-C) at iteration {solver.iter}; the solver is "
                            f"intact: step, solve and snapshot go on from there") from None
    finally:
        solver.action_request_function = previous


def solver_solve(*a):
    solver = _solver(*a, text="caffe_('solver_solve', hSolver)")
    _interruptible(solver, solver.solve)


def solver_step(*a):
    solver = _solver(*a, more=(_is_double,), text="caffe_('solver_step', hSolver, iters)")
    iters = _scalar(a[1])
    _check(iters is not None, "caffe_('solver_step', hSolver, iters)")
    _interruptible(solver, lambda: solver.step(int(iters)))


def get_net(*a):
    _check(len(a) == 2 and all(isinstance(x, str) for x in a),
           "caffe_('get_net', model_file, phase_name)")
    from ..net import Net
    phases = {"train": caffe_pb2.TRAIN, "test": caffe_pb2.TEST}
    _file(a[0])
    if a[1] not in phases:
        raise MatcaffeError("caffe:usage", f"Unknown phase '{a[1]}' (use 'train' or 'test')")
    return _handles("Net", [Net(a[0], phases[a[1]])], None)


def delete_net(*a):
    _check(len(a) == 1 and _is_struct(a[0]), "caffe_('delete_net', hNet)")
    TABLE.get(a[0], "Net")
    # A solver's nets belong to it: as in BVLC, deleting their MATLAB objects frees nothing.
    if TABLE.owner(a[0]) is None:
        TABLE.delete(a[0][1])


def _net(*a, more=(), text=""):
    _check(len(a) == 1 + len(more) and _is_struct(a[0]) and
           all(test(x) for test, x in zip(more, a[1:])), text)
    return TABLE.get(a[0], "Net")


def net_get_attr(*a):
    net = _net(*a, text="caffe_('net_get_attr', hNet)")
    owner = a[0][1]
    return ("struct", [("hLayer_layers", _handles("Layer", net._layers, owner)),
                       ("hBlob_blobs", _handles("Blob", net._blobs, owner)),
                       ("input_blob_indices", ("column", list(net.input_ids))),
                       ("output_blob_indices", ("column", list(net.output_ids))),
                       ("layer_names", ("cellstr", list(net._layer_names))),
                       ("blob_names", ("cellstr", list(net._blob_names)))])


def net_forward(*a):
    _net(*a, text="caffe_('net_forward', hNet)").forward_prefilled()


def net_backward(*a):
    _net(*a, text="caffe_('net_backward', hNet)").backward_all()


def net_copy_from(*a):
    net = _net(*a, more=(lambda x: isinstance(x, str),),
               text="caffe_('net_copy_from', hNet, weights_file)")
    net.copy_from(_file(a[1]))


def net_reshape(*a):
    _net(*a, text="caffe_('net_reshape', hNet)").reshape()


def net_save(*a):
    net = _net(*a, more=(lambda x: isinstance(x, str),),
               text="caffe_('net_save', hNet, save_file)")
    net.save(a[1])


def _layer(*a, text):
    _check(len(a) == 1 and _is_struct(a[0]), text)
    return TABLE.get(a[0], "Layer")


def layer_get_attr(*a):
    layer = _layer(*a, text="caffe_('layer_get_attr', hLayer)")
    return ("struct", [("hBlob_blobs", _handles("Blob", list(layer.blobs), a[0][1]))])


def layer_get_type(*a):
    return _layer(*a, text="caffe_('layer_get_type', hLayer)").type


def _blob(*a, more=(), text=""):
    _check(len(a) == 1 + len(more) and _is_struct(a[0]) and
           all(test(x) for test, x in zip(more, a[1:])), text)
    return TABLE.get(a[0], "Blob")


def _is_single(x):
    return isinstance(x, tuple) and x[:1] == ("single",)


def blob_get_shape(*a):
    return ("row", list(reversed(_blob(*a, text="caffe_('blob_get_shape', hBlob)").shape)))


def blob_reshape(*a):
    blob = _blob(*a, more=(_is_double,), text="caffe_('blob_reshape', hBlob, new_shape)")
    dims = a[1][1]
    if any(d < 0 or d != int(d) for d in dims):
        raise MatcaffeError("caffe:usage", f"new_shape must hold non-negative integers, got "
                                           f"{dims}")
    blob.reshape(tuple(int(d) for d in reversed(dims)))


def blob_get_data(*a):
    blob = _blob(*a, text="caffe_('blob_get_data', hBlob)")
    return _array(blob.data_numpy(), blob.shape)


def blob_get_diff(*a):
    blob = _blob(*a, text="caffe_('blob_get_diff', hBlob)")
    return _array(blob.diff_numpy(), blob.shape)


def blob_set_data(*a):
    blob = _blob(*a, more=(_is_single,), text="caffe_('blob_set_data', hBlob, new_data)")
    _copy_in(blob, a[1], diff=False)


def blob_set_diff(*a):
    blob = _blob(*a, more=(_is_single,), text="caffe_('blob_set_diff', hBlob, new_diff)")
    _copy_in(blob, a[1], diff=True)


def set_mode_cpu(*a):
    _check(not a, "caffe_('set_mode_cpu')")
    common.set_mode_cpu()


def set_mode_gpu(*a):
    _check(not a, "caffe_('set_mode_gpu')")
    common.set_mode_gpu()


def set_device(*a):
    _check(len(a) == 1 and _is_double(a[0]) and _scalar(a[0]) is not None,
           "caffe_('set_device', device_id)")
    common.set_device(int(_scalar(a[0])))


def get_init_key(*a):
    _check(not a, "caffe_('get_init_key')")
    return TABLE.init_key


def reset(*a):
    _check(not a, "caffe_('reset')")
    solvers, nets = TABLE.reset()
    return ("print", f"Cleared {solvers} solvers and {nets} stand-alone nets\n")


def read_mean(*a):
    _check(len(a) == 1 and isinstance(a[0], str), "caffe_('read_mean', mean_proto_file)")
    blob = blob_from_proto(read_binaryproto(_file(a[0])))
    return _array(blob.data_numpy(), blob.shape)


def write_mean(*a):
    _check(len(a) == 2 and _is_single(a[0]) and isinstance(a[1], str),
           "caffe_('write_mean', mean_data, mean_proto_file)")
    dims = a[0][2]
    if not 2 <= len(dims) <= 3:
        raise MatcaffeError("caffe:usage", "mean_data must have 2 or 3 dimensions (W x H or "
                                           f"W x H x C), got {len(dims)}")
    width, height, channels = (tuple(dims) + (1,))[:3]
    blob = Blob((1, channels, height, width))
    _copy_in(blob, a[0], diff=False)
    write_binary_proto(a[1], blob_to_proto(blob, caffe_pb2.BlobProto()))


def version(*a):
    _check(not a, "caffe_('version')")
    return BVLC_VERSION     # the Caffe whose files and numbers pycaffe reproduces


COMMANDS = {f.__name__: f for f in (
    get_solver, delete_solver, solver_get_attr, solver_get_iter, solver_restore, solver_solve,
    solver_step, get_net, delete_net, net_get_attr, net_forward, net_backward, net_copy_from,
    net_reshape, net_save, layer_get_attr, layer_get_type, blob_get_shape, blob_reshape,
    blob_get_data, blob_set_data, blob_get_diff, blob_set_diff, set_mode_cpu, set_mode_gpu,
    set_device, get_init_key, reset, read_mean, write_mean, version,
    # beyond BVLC's protocol: what caffe.Solver's max_iter and snapshot need
    solver_get_max_iter, solver_snapshot)}


def identifier(error):
    for cls, ident in _IDENTIFIERS:
        if isinstance(error, cls):
            return ident
    return "caffe:python"


def dispatch(command, args):
    """Run one command; never raises (errors come back as ("error", identifier, message))."""
    try:
        handler = COMMANDS.get(command) if isinstance(command, str) else None
        if handler is None:
            raise MatcaffeError("caffe:unknownCommand", f"Unknown command '{command}'")
        return handler(*args)
    except MatcaffeError as e:
        return ("error", e.identifier, str(e))
    except KeyboardInterrupt:
        return ("error", "caffe:interrupted", f"caffe_('{command}'): interrupted (Ctrl-C)")
    except BaseException as e:      # noqa: B902  (nothing may escape into the host)
        message = str(e) or type(e).__name__
        if identifier(e) == "caffe:python":
            message = f"{type(e).__name__}: {message}"
        return ("error", identifier(e), message)
