"""Blob: Caffe's N-D array with a value (data) and a gradient (diff).

Inside the framework `data` and `diff` are torch tensors on the net's device.
pycaffe code sees a blob through `PyBlob`, whose `data` and `diff` are NumPy arrays
sharing memory with those tensors. When the tensors live on a GPU the NumPy arrays
are a host mirror kept in step the way Caffe's SyncedMemory does it: touching the
mirror marks the host copy as the newest, touching the tensor marks the device copy.
"""
import weakref

import numpy as np
import torch

from .errors import CaffeError, OutOfMemoryError
from .memory import check_allocation

# Caffe refuses blobs whose element count does not fit an int; we also bound the
# allocation a model file may ask for, so a hostile file cannot exhaust memory.
MAX_BLOB_COUNT = 2 ** 31 - 1
MAX_BLOB_AXES = 32      # Caffe's kMaxBlobAxes

_AT_DEVICE, _AT_HOST, _SYNCED = 0, 1, 2
# Compute dtypes of half precision (caffe.solvers.precision); files always hold float32.
HALF_DTYPES = (torch.bfloat16, torch.float16)


# Writes to learned blobs that torch's version counters do not see (its fused optimizer
# kernels, loading weights): the writers count them here, and the inference programs, which
# keep weights derived from the learned blobs (caffe.net_inference), rebuild when it moves.
_weight_writes = 0


def note_weight_write():
    """Say that learned blobs were written (a solver's update, weights loaded)."""
    global _weight_writes
    _weight_writes += 1


def weight_writes():
    return _weight_writes


def checked_count(shape, what="blob", error=CaffeError):
    """The element count of `shape`, refusing negative dimensions and counts over the limit.

    Readers call it on shapes a file declares before they allocate anything, so a file
    claiming 10^12 elements fails at once; raise caffe.blob.MAX_BLOB_COUNT to allow more.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) > MAX_BLOB_AXES:
        raise error(f"{what} shape has {len(shape)} axes, more than Caffe's {MAX_BLOB_AXES}")
    count = nonzero = 1
    for d in shape:
        if d < 0:
            raise error(f"{what} dimension must be non-negative, got shape {shape}")
        count *= d
        nonzero *= max(d, 1)
    # An empty shape such as (10^12, 0, 10^12) is refused too: NumPy cannot even represent it.
    if nonzero > MAX_BLOB_COUNT:
        raise error(f"{what} shape {shape} has {count if count else nonzero} elements"
                    f"{'' if count else ' (ignoring its zero dimension)'}, more than the "
                    f"limit {MAX_BLOB_COUNT} (caffe.blob.MAX_BLOB_COUNT)")
    return count


class _Mem:
    """One flat buffer (data or diff) with capacity, shape view and host mirror.

    Like Caffe's SyncedMemory the buffer is allocated (zeroed) on first use, so the
    diffs of a net that only runs forward never cost memory.
    """

    # pending: a value the inference program computed (caffe.net_inference) that this
    # buffer takes on first use; handed_out counts the NumPy arrays handed out, and arrays
    # refers weakly to those that may still be alive, so that the program knows whether a
    # pycaffe array may still write (or read) the memory behind its back.
    __slots__ = ("buf", "view", "host", "head", "shape", "count", "dtype", "device", "label",
                 "pending", "handed_out", "arrays")

    def __init__(self, dtype, device):
        self.buf = self.view = self.host = self.label = self.pending = None
        self.handed_out, self.arrays = 0, []
        self.head = _SYNCED
        self.shape, self.count = (), 1
        self.dtype, self.device = dtype, torch.device(device)

    def reshape(self, shape, count):
        self.shape, self.count, self.pending = shape, count, None
        if self.buf is not None and count <= self.buf.numel():
            self.view = self.buf[:count].view(shape)
        else:
            # Like Caffe, growing discards the old values; shrinking keeps them.
            self.buf = self.view = None
        self.host, self.head = None, _SYNCED

    def _materialize(self):
        if self.buf is None:
            self.buf = self._allocate()
        self.view = self.buf[:self.count].view(self.shape)
        return self.view

    def _allocate(self):
        """The zeroed buffer; an allocation the machine cannot hold names the blob."""
        nbytes = self.count * self.dtype.itemsize
        what = f"{self.label or 'a blob'} of shape {self.shape} ({self.dtype}, {self.device})"
        if self.device.type == "cpu":
            check_allocation(nbytes, what, OutOfMemoryError)
        try:
            return torch.zeros(self.count, dtype=self.dtype, device=self.device)
        except RuntimeError as e:       # torch's allocators (CPU and CUDA) raise RuntimeError
            raise OutOfMemoryError(f"cannot allocate {what}, {nbytes} bytes: "
                                   f"{str(e).splitlines()[0]}") from None

    def tensor(self):
        view = self.view if self.view is not None else self._materialize()
        if self.pending is not None:
            self.settle()
        if self.head == _AT_HOST:
            view.copy_(torch.from_numpy(self.host))
        self.head = _AT_DEVICE
        return view

    def settle(self):
        """Take the pending value into the buffer (a no-op without one)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            view = self.view if self.view is not None else self._materialize()
            view.copy_(pending)
            self.head = _AT_DEVICE

    def has_live_array(self):
        """Whether a NumPy array handed out for this buffer may still be in use."""
        if self.arrays:
            self.arrays = [ref for ref in self.arrays if ref() is not None]
        return bool(self.arrays)

    def _handed(self, array):
        if not any(ref() is array for ref in self.arrays):    # also forgets dead ones
            self.has_live_array()
            self.arrays.append(weakref.ref(array))
        return array

    def numpy(self):
        view = self.view if self.view is not None else self._materialize()
        if self.pending is not None:
            self.settle()
        self.handed_out += 1
        if self.device.type == "cpu" and self.dtype not in HALF_DTYPES:
            return self._handed(view.numpy())
        # A GPU blob's mirror is a host copy; so is a half-precision blob's, in float32
        # (NumPy has no bfloat16), so that every write reaches the tensor through tensor().
        if self.host is None or self.head == _AT_DEVICE:
            host = view.cpu()
            self.host = (host.float() if self.dtype in HALF_DTYPES else host).numpy()
        self.head = _AT_HOST
        return self._handed(self.host)



def canonical_axis_index(axis, num_axes, shape=None):
    """Blob::CanonicalAxisIndex: an axis in [-num_axes, num_axes) as an index from 0 (a 0-D
    blob has axis 0); out of range, a CaffeError. Layers and the exporters share it."""
    if not -num_axes <= axis < max(num_axes, 1):
        shape = "" if shape is None else f" of shape {tuple(shape)}"
        raise CaffeError(f"axis {axis} out of range for {num_axes}-D blob{shape}")
    return axis + num_axes if axis < 0 else axis


class Blob:
    """An N-D array of `dtype` on `device` with data and diff of equal shape."""

    def __init__(self, shape=(), dtype=torch.float32, device="cpu"):
        self._data = _Mem(dtype, device)
        self._diff = _Mem(dtype, device)
        self._shape = None
        self.reshape(shape)

    @property
    def name(self):
        """The name errors give this blob (the Net's blob or param name), or None."""
        label = self._data.label
        return None if label is None else label[len("blob '"):-1]

    @name.setter
    def name(self, value):
        self._data.label = None if value is None else f"blob '{value}'"
        self._diff.label = None if value is None else f"blob '{value}' (its diff)"

    # -- shape -------------------------------------------------------------
    def reshape(self, *shape):
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
        shape = tuple(int(d) for d in shape)
        if shape == self._shape:
            return
        count = checked_count(shape, self._data.label or "blob")
        self._shape, self._count = shape, count
        self._data.reshape(shape, count)
        self._diff.reshape(shape, count)

    def reshape_like(self, other):
        self.reshape(other.shape)

    @property
    def shape(self):
        return self._shape

    @property
    def num_axes(self):
        return len(self._shape)

    def count(self, start=0, end=None):
        n = 1
        for d in self._shape[start:end]:
            n *= d
        return n

    def canonical_axis_index(self, axis):
        return canonical_axis_index(axis, len(self._shape), self._shape)

    def shape_at(self, axis):
        return self._shape[self.canonical_axis_index(axis)]

    def legacy_shape(self, index):
        """Caffe's num/channels/height/width view: missing leading axes count as 1."""
        n = len(self._shape)
        if index >= n or index < -n:
            return 1
        return self._shape[index]

    num = property(lambda self: self.legacy_shape(0))
    channels = property(lambda self: self.legacy_shape(1))
    height = property(lambda self: self.legacy_shape(2))
    width = property(lambda self: self.legacy_shape(3))

    @property
    def shape_string(self):
        return " ".join(str(d) for d in self._shape) + f" ({self._count})"

    # -- values --------------------------------------------------------------
    @property
    def data(self):
        return self._data.tensor()

    @property
    def diff(self):
        return self._diff.tensor()

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def device(self):
        return self._data.device

    def data_numpy(self):
        return self._data.numpy()

    def diff_numpy(self):
        return self._diff.numpy()

    def share_data(self, other):
        """Point this blob's data at other's storage (Caffe's ShareData; counts must match)."""
        if other._count != self._count:
            raise CaffeError(f"cannot share data of {other.shape} with {self.shape}")
        self._data = _shared(other._data, self._shape)

    def share_diff(self, other):
        if other._count != self._count:
            raise CaffeError(f"cannot share diff of {other.shape} with {self.shape}")
        self._diff = _shared(other._diff, self._shape)

    def shares_data_with(self, other):
        """Whether this blob's data lies in other's (allocated) storage."""
        return self._data.buf is not None and self._data.buf is other._data.buf

    def shares_diff_with(self, other):
        return self._diff.buf is not None and self._diff.buf is other._diff.buf

    def diff_allocated(self):
        """Whether the diff has storage yet (it is allocated on first use)."""
        return self._diff.buf is not None

    def use_diff_buffer(self, buf):
        """Keep the diff in the first count() elements of buf, a flat tensor (a Net recycling
        diffs hands one buffer to blobs whose gradients are never alive at the same time)."""
        mem = _Mem(self.dtype, self.device)
        mem.buf, mem.shape, mem.count = buf, self._shape, self._count
        mem.view = buf[:self._count].view(self._shape)
        self._diff = mem

    def to(self, dtype=None, device=None):
        """Move (or cast) the storage in place, keeping values."""
        for mem in (self._data, self._diff):
            mem.tensor()
            mem.dtype = dtype or mem.dtype
            mem.device = torch.device(device or mem.device)
            mem.buf = mem.buf.to(dtype=mem.dtype, device=mem.device)
            mem.view = mem.buf[:self._count].view(self._shape)
            mem.host, mem.head = None, _SYNCED
        return self

    def asum_data(self):
        return float(self.data.abs().sum())

    def asum_diff(self):
        return float(self.diff.abs().sum())

    def __repr__(self):
        return f"Blob({self._shape}, {self.dtype}, {self.device})"


def _shared(mem, shape):
    # A second _Mem over the same flat buffer: the two blobs see the same values (also
    # with different shapes of equal count, ParamSpec share_mode PERMISSIVE), yet each
    # keeps its own shape, so reshaping one never re-views the other.
    mem.tensor()
    view = _Mem(mem.dtype, mem.device)
    view.buf, view.shape, view.count = mem.buf, shape, mem.count
    view.view = mem.buf[:mem.count].view(shape)
    return view


class PyBlob:
    """pycaffe's face of a Blob: NumPy `data`/`diff` that share memory with it."""

    __slots__ = ("_blob",)

    def __init__(self, blob):
        self._blob = blob

    @property
    def data(self):
        return self._blob.data_numpy()

    @property
    def diff(self):
        return self._blob.diff_numpy()

    @property
    def shape(self):
        return self._blob.shape

    @property
    def count(self):
        return self._blob.count()

    num = property(lambda self: self._blob.num)
    channels = property(lambda self: self._blob.channels)
    height = property(lambda self: self._blob.height)
    width = property(lambda self: self._blob.width)

    def reshape(self, *shape):
        self._blob.reshape(*shape)

    @property
    def _gpu_data_ptr(self):
        """The device address of the data (BVLC's, for PyCUDA and friends)."""
        return self._device_ptr(self._blob.data)

    @property
    def _gpu_diff_ptr(self):
        return self._device_ptr(self._blob.diff)

    def _device_ptr(self, tensor):
        if tensor.device.type != "cuda":
            raise CaffeError(f"blob {self._blob.shape_string} lives on {tensor.device}, not "
                             f"a GPU: no device pointer (build the net after set_mode_gpu())")
        return tensor.data_ptr()

    def __repr__(self):
        return f"<Blob {self._blob.shape_string}>"
