"""Snapshots and resuming: <prefix>_iter_N.caffemodel[.h5] with its .solverstate[.h5].

A state holds the iteration, the position in a step schedule and the solver's `history`
blobs, in the reference's layouts (binary SolverState or HDF5), so each side can resume
from the other's files.
"""
import errno
import fcntl
import logging
import os
import socket

import numpy as np
import torch

from .. import formats, hdf5, parallel
from ..formats import h5py
from ..blob import checked_count
from ..errors import CaffeError, SolverError
from ..log_text import printable
from ..blob_proto import blob_to_proto, proto_shape, proto_values
from ..proto import caffe_pb2

log = logging.getLogger("caffe.solver")

INT32_MAX = 2 ** 31 - 1


class SnapshotMixin:
    """The Solver's snapshot, state_proto and restore (Caffe's Solver::Snapshot/Restore)."""

    restored_batches = None   # (world_size, iter_size) of the run a restored state came from

    def check_snapshot_prefix(self, only_if_periodic=False):
        """Fail before training if snapshots cannot be written (CheckSnapshotWritePermissions)."""
        p = self.param
        if (only_if_periodic and not p.snapshot) or not parallel.is_root():
            return
        if p.snapshot and not p.HasField("snapshot_prefix"):
            raise SolverError("snapshot is specified but snapshot_prefix is not")
        folder = os.path.dirname(os.path.abspath(p.snapshot_prefix or "x"))
        if not os.path.isdir(folder):
            raise SolverError(f"cannot write to snapshot prefix '{p.snapshot_prefix}': the "
                              f"directory '{folder}' does not exist. Make sure that the "
                              f"directory exists and is writeable.")
        if not os.access(folder, os.W_OK):
            raise SolverError(f"cannot write to snapshot prefix '{p.snapshot_prefix}': the "
                              f"directory '{folder}' is not writeable")

    def lock_snapshot_prefix(self):
        """Hold an advisory lock on <prefix>.lock while solve() runs (root worker only).

        Two runs writing one snapshot prefix at once would interleave their files; the second
        fails here, naming the first's pid. The lock is the kernel's (flock): it ends with the
        process, however it ends, so a later run is never locked out by a dead one. A run that
        ends normally removes the file, so the folder holds only what BVLC writes; one that was
        killed leaves it, holding its pid, and the next run takes it over.
        """
        p = self.param
        if getattr(self, "_snapshot_lock", None) is not None or not parallel.is_root() or \
                not p.HasField("snapshot_prefix") or not (p.snapshot or p.snapshot_after_train):
            return
        path = f"{p.snapshot_prefix}.lock"
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            return                  # check_snapshot_prefix reports the missing folder
        for _ in range(10):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            except OSError as e:
                log.warning("Cannot create the snapshot lock %s (%s): runs sharing this "
                            "snapshot prefix are not detected", path, e.strerror or e)
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _lock_holder(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    raise SolverError(f"snapshot prefix '{p.snapshot_prefix}' is in use by "
                                      f"another training run ({holder}; lock file {path}): "
                                      f"two runs would overwrite each other's snapshots. Wait "
                                      f"for it, stop it, or give this run another "
                                      f"snapshot_prefix.") from None
                log.warning("Cannot lock %s (%s): runs sharing this snapshot prefix are not "
                            "detected", path, e.strerror or e)
                return
            if _same_file(fd, path):
                break
            os.close(fd)    # a finishing run removed the file after we opened it: open anew
        else:
            log.warning("Cannot lock %s: it keeps being replaced", path)
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._snapshot_lock = (fd, path)

    def release_snapshot_lock(self):
        held, self._snapshot_lock = getattr(self, "_snapshot_lock", None), None
        if held is not None:
            fd, path = held
            try:
                os.unlink(path)     # removed while still locked, so no other run holds it
            except OSError:
                pass
            os.close(fd)            # closing the descriptor releases the flock

    def snapshot_filename(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self):
        """Write <prefix>_iter_N.caffemodel[.h5] and the matching .solverstate[.h5]."""
        if not parallel.is_root():
            return None             # the root solver (worker 0) alone writes snapshots
        # BVLC's state holds int32 counters: a Python loop of step() calls can pass them.
        if not 0 <= self.iter <= INT32_MAX:
            raise SolverError(f"cannot snapshot iteration {self.iter}: a solver state holds "
                              f"iterations 0 to {INT32_MAX} (an int32, as BVLC's)")
        hdf5 = self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        model = self.snapshot_filename(".caffemodel.h5" if hdf5 else ".caffemodel")
        log.info("Snapshotting to %s file %s", "HDF5" if hdf5 else "binary proto",
                 printable(model))
        self._note_replacing(model)
        # A half-precision run writes its float32 masters: the file is BVLC's float32 model.
        master = getattr(self, "master", None)
        self.net.save(model, write_diff=self.param.snapshot_diff,
                      masters=master.params if master is not None else None)
        state = self.snapshot_filename(".solverstate.h5" if hdf5 else ".solverstate")
        log.info("Snapshotting solver state to %s file %s", "HDF5" if hdf5 else "binary proto",
                 printable(state))
        self._note_replacing(state)
        if hdf5:
            self._write_state_hdf5(state, model)
        else:
            formats.write_binary_proto(state, self.state_proto(model))
        return model, state

    def _note_replacing(self, path):
        """Snapshots replace same-named files (atomically), as BVLC's do; one WARNING names
        each file replaced that this run did not write (another run's result)."""
        written = self.__dict__.setdefault("_snapshots_written", set())
        key = os.path.abspath(path)
        if key not in written and os.path.exists(path):
            log.warning("Replacing %s, which this run did not write", printable(path))
        written.add(key)

    def state_proto(self, learned_net=""):
        state = caffe_pb2.SolverState(iter=self.iter, current_step=self.current_step,
                                      world_size=parallel.solver_count(),
                                      iter_size=self.param.iter_size)
        if learned_net:
            state.learned_net = learned_net
        for blob in self.history:
            blob_to_proto(blob, state.history.add())
        return state

    def _write_state_hdf5(self, path, learned_net):
        def write(f):
            with h5py.File(f, "w") as h5:
                h5.create_dataset("iter", data=np.array([self.iter], np.int32))
                h5.create_dataset("learned_net", data=np.bytes_(learned_net.encode()))
                h5.create_dataset("current_step", data=np.array([self.current_step], np.int32))
                h5.create_dataset("world_size", data=np.array([parallel.solver_count()], np.int32))
                h5.create_dataset("iter_size", data=np.array([self.param.iter_size], np.int32))
                group = h5.create_group("history")
                for i, blob in enumerate(self.history):
                    group.create_dataset(str(i), data=blob.data.cpu().numpy())
        formats.atomic_write(path, write)

    def restore(self, path):
        """Resume from a .solverstate (binary) or .solverstate.h5, ours or the reference's."""
        path = str(path)
        if path.endswith(".h5"):
            iteration, learned_net, step, history = _read_state_hdf5(path)
            self.restored_batches = _read_batches_hdf5(path)
        else:
            state = formats.read_binary_proto(path, caffe_pb2.SolverState())
            iteration, step = state.iter, state.current_step
            learned_net = state.learned_net if state.HasField("learned_net") else ""
            history = [(proto_shape(h), h) for h in state.history]
            self.restored_batches = ((state.world_size, state.iter_size)
                                     if state.HasField("world_size") else None)
        _check_counter(path, "iter", iteration)
        _check_counter(path, "current_step", step)
        if len(history) != len(self.history):
            raise SolverError(f"{path}: incorrect length of history blobs: the file has "
                              f"{len(history)}, this {self.type} solver needs "
                              f"{len(self.history)} (a state saved by another solver type or "
                              f"for another net?)")
        if learned_net:
            learned_net = _find_learned_net(learned_net, path)
            self.net.copy_from(learned_net)
            if getattr(self, "master", None) is not None:
                self.master.load(_weight_layers(learned_net))
        for i, (blob, (shape, value)) in enumerate(zip(self.history, history)):
            if tuple(shape) != blob.shape and \
                    checked_count(shape, f"{path}: history blob {i}", SolverError) != blob.count():
                raise SolverError(f"{path}: history blob {i} has shape {tuple(shape)}, the "
                                  f"net's param has {blob.shape}")
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            else:
                try:
                    value = proto_values(value, blob.count())
                except CaffeError as e:
                    raise SolverError(f"{path}: history blob {i}: {e}") from None
            blob.data.copy_(value.reshape(blob.shape))
        self.iter, self.current_step = int(iteration), int(step)
        log.info("Restored solver state from %s at iteration %d", path, self.iter)


def _read_batches_hdf5(path):
    """(world_size, iter_size) a pycaffe run recorded in a .solverstate.h5, else None."""
    with h5py.File(path, "r") as h5:
        if "world_size" not in h5 or "iter_size" not in h5:
            return None
        return tuple(int(_hdf5_scalar(h5, key, path)) for key in ("world_size", "iter_size"))


def _read_state_hdf5(path):
    try:
        with hdf5.open_file(path, SolverError) as h5:
            for key in ("iter", "current_step", "history"):
                if hdf5.member(h5, key, path, SolverError) is None:
                    raise SolverError(f"{path}: not a solver state: no '{key}' in the HDF5 file")
            iteration, step = (_hdf5_scalar(h5, key, path) for key in ("iter", "current_step"))
            learned_net = ""
            value = hdf5.member(h5, "learned_net", path, SolverError)
            if value is not None:
                if not isinstance(value, h5py.Dataset) or value.size != 1:
                    raise SolverError(f"{path}: learned_net is not a file name")
                hdf5.check_storage(value, path, SolverError)
                learned_net = value[()]
                if isinstance(learned_net, np.ndarray) and learned_net.size == 1:
                    learned_net = learned_net.reshape(-1)[0]
                if isinstance(learned_net, bytes):
                    learned_net = learned_net.decode()
                if not isinstance(learned_net, str):
                    raise SolverError(f"{path}: learned_net is not a file name")
            group = h5["history"]
            datasets = []
            for i in range(len(group)):
                ds = hdf5.member(group, str(i), path, SolverError)
                if ds is None:
                    raise SolverError(f"{path}: history blob {i} is missing")
                datasets.append((ds, np.float64))
            history = [(value.shape, value)
                       for value in hdf5.read_all(datasets, path, SolverError)]
            return iteration, learned_net, step, history
    except CaffeError:
        raise
    except (formats.H5_ERRORS + (UnicodeDecodeError,)) as e:
        raise SolverError(f"{path}: not a readable HDF5 solver state: {e}") from None


def _hdf5_scalar(h5, key, path):
    value = h5[key]
    if not isinstance(value, h5py.Dataset) or value.size != 1 or value.dtype.kind not in "iuf":
        raise SolverError(f"{path}: '{key}' is not a single number")
    number = float(hdf5.read_all([(value, np.float64)], path, SolverError)[0].reshape(-1)[0])
    if not number.is_integer():     # nan, inf or 2.5: int() would raise or round silently
        raise SolverError(f"{path}: '{key}' is {number}, not a whole number")
    return int(number)


def _check_counter(path, field, value):
    """A state's iter and current_step are int32 counts from 0 (BVLC's SolverState). A
    negative or larger one (a damaged or forged file) would make the next solve() run about
    2^31 iterations, index the step schedule from its end, or overflow the next snapshot."""
    if not 0 <= value <= INT32_MAX:
        raise SolverError(f"{path}: field '{field}' is {value}, outside 0 to {INT32_MAX}: "
                          f"not a state a solver writes (a damaged or foreign file?)")


def _weight_layers(path):
    """[(layer name, [values])] of a weights file, for a half-precision solver's masters."""
    if str(path).endswith(".h5"):
        groups = formats.read_hdf5_weights(str(path))
        return [(name, [blobs[k] for k in sorted(blobs, key=int)])
                for name, blobs in groups.items()]
    return [(layer.name, list(layer.blobs)) for layer in formats.read_caffemodel(path).layer]


def _same_file(fd, path):
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _lock_holder(fd):
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


def _find_learned_net(learned_net, state_path):
    """Caffe opens learned_net relative to the current directory; we also try the state's own."""
    if os.path.exists(learned_net):
        return learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(state_path)),
                          os.path.basename(learned_net))
    if os.path.exists(beside):
        log.info("learned_net %s not found from %s; using %s beside the solver state",
                 learned_net, os.getcwd(), beside)
        return beside
    raise SolverError(f"{state_path}: its weights file '{learned_net}' was found neither from "
                      f"the current directory ({os.getcwd()}) nor beside the solver state")
