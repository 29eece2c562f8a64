"""Reading HDF5 files we did not write (.caffemodel.h5, .solverstate.h5, HDF5Data sources).

Every dataset is inspected through h5py's low-level API before a byte of it is read: its
shape against caffe.blob.MAX_BLOB_COUNT, its type (numbers only), its layout and storage
(external files and virtual datasets point outside the file and are refused unless
ALLOW_EXTERNAL is set; a dataset never written would read as its fill value: refused), its
filters (only HDF5's built-in ones: an unknown filter would load a plugin) and the bytes it
decompresses to, against MAX_READ_BYTES and the memory left on the machine, summed over all
the datasets a file is read for. Links to other files are refused like external storage.
The data is then read in slices of at most SLICE_BYTES into an array allocated once.
"""
import os

import numpy as np

from . import blob as _blob
from ._optional import LazyModule
from .errors import OutOfMemoryError
from .files import check_regular_file
from .memory import check_allocation

h5py = LazyModule("h5py")   # imported when an HDF5 file is first read

# Follow external links, external storage and virtual datasets (files outside the one opened).
ALLOW_EXTERNAL = False
# The most bytes that reading one file may decompress to (all its datasets read together).
MAX_READ_BYTES = 2 ** 34
# Datasets are read this many bytes at a time, so no temporary copy is larger.
SLICE_BYTES = 2 ** 26

# HDF5's built-in filters (and LZF, which h5py itself registers); anything else is a plugin.
# The codes are fixed by the HDF5 format (H5Zpublic.h: H5Z_FILTER_DEFLATE = 1 ... 6), written
# out so that importing this module does not import h5py.
_KNOWN_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                  6: "scaleoffset", 32000: "lzf"}


def _opt_in():
    return " (set caffe.hdf5.ALLOW_EXTERNAL = True to follow it)"


def member(group, name, path, error):
    """group[name], refusing a link into another file unless ALLOW_EXTERNAL."""
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if isinstance(link, h5py.ExternalLink) and not ALLOW_EXTERNAL:
        where = f"{group.name.rstrip('/')}/{name}"
        raise error(f"{path}: {where} is a link to '{link.path}' in another file, "
                    f"'{link.filename}'{_opt_in()}")
    if isinstance(link, h5py.ExternalLink):
        _check_target(link.filename, path, error, f"{path}: {name} links to")
    return group[name]


def items(group, path, error):
    """(name, object) pairs of a group, external links refused as by member()."""
    return [(name, member(group, name, path, error)) for name in group]


def inspect(ds, path, error, dtype=None):
    """The bytes `ds` will occupy once read as `dtype` (its own if None); refuses what
    cannot be read safely, naming the file and dataset."""
    where = f"{path}: dataset {ds.name}"
    if not isinstance(ds, h5py.Dataset):
        raise error(f"{path}: {getattr(ds, 'name', None) or 'an object'} is not a dataset")
    dsid = ds.id
    kind = dsid.dtype
    if kind.kind not in "biuf":
        raise error(f"{where} holds {kind} values, not numbers")
    shape = dsid.shape
    if shape is None:
        raise error(f"{where} has no dataspace (a null dataset)")
    count = _blob.checked_count(shape, where, error)
    check_storage(ds, path, error, count)
    size = np.dtype(dtype if dtype is not None else kind).itemsize
    return count * max(size, kind.itemsize)


def check_storage(ds, path, error, count=None):
    """Refuse a dataset stored outside the file, compressed by a plugin, or never written."""
    where = f"{path}: dataset {ds.name}"
    dsid = ds.id
    count = ds.size if count is None else count
    plist = dsid.get_create_plist()
    layout = plist.get_layout()
    external = layout == getattr(h5py.h5d, "VIRTUAL", 3) or plist.get_external_count() > 0
    if external and not ALLOW_EXTERNAL:
        what = "a virtual dataset made of other files" if plist.get_external_count() == 0 \
            else f"stored in the external file '{_external_names(plist)}'"
        raise error(f"{where} is {what}{_opt_in()}")
    if external:
        _check_external_files(plist, path, where, error)
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in _KNOWN_FILTERS:
            raise error(f"{where} is compressed with HDF5 filter {code}, not one of HDF5's "
                        f"own ({', '.join(sorted(_KNOWN_FILTERS.values()))})")
    if count and layout in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED) and not external and \
            dsid.get_space_status() == h5py.h5d.SPACE_STATUS_NOT_ALLOCATED:
        raise error(f"{where}: its {count} values were never written (the file holds only a "
                    f"fill value)")


def _external_names(plist):
    return "', '".join(plist.get_external(i)[0].decode(errors="replace")
                       for i in range(plist.get_external_count()))


def _check_external_files(plist, path, where, error):
    """Even when allowed, external storage must be regular files (a FIFO would hang)."""
    for i in range(plist.get_external_count()):
        _check_target(os.fsdecode(plist.get_external(i)[0]), path, error,
                      f"{where}: external file")


def _check_target(name, path, error, what):
    # HDF5 looks for a relative name from the current folder and from the file's own.
    for candidate in (name, os.path.join(os.path.dirname(path), name)):
        if os.path.lexists(candidate):
            check_regular_file(candidate, error, what)


def check_total(nbytes, path, error):
    """Refuse reading `nbytes` in all from `path`: past MAX_READ_BYTES or the free memory."""
    if nbytes > MAX_READ_BYTES:
        raise error(f"{path}: reading it would decompress to {nbytes} bytes, more than the "
                    f"limit {MAX_READ_BYTES} (caffe.hdf5.MAX_READ_BYTES)")
    check_allocation(nbytes, f"{path}: reading its datasets", error)


def read(ds, path, dtype, error):
    """An inspected dataset as an ndarray of `dtype`, read in slices of SLICE_BYTES."""
    dtype = np.dtype(dtype)
    shape = ds.shape
    try:
        out = np.empty(shape, dtype)
    except MemoryError:
        raise OutOfMemoryError(f"{path}: dataset {ds.name}: cannot allocate {shape} "
                               f"{dtype}") from None
    if out.size == 0:
        return out
    if out.ndim == 0:
        ds.read_direct(out)
        return out
    row = max(1, out[0].size * max(dtype.itemsize, ds.dtype.itemsize))
    step = max(1, SLICE_BYTES // row)
    for start in range(0, shape[0], step):
        stop = min(shape[0], start + step)
        # h5py converts the type while reading; the temporary is one slice at most.
        out[start:stop] = ds[start:stop]
    return out


def read_all(datasets, path, error):
    """[(ds, dtype)] -> arrays, every dataset inspected and the total checked before reading."""
    total = sum(inspect(ds, path, error, dtype) for ds, dtype in datasets)
    check_total(total, path, error)
    return [read(ds, path, dtype, error) for ds, dtype in datasets]


def open_file(path, error):
    """An HDF5 file opened read-only; a path that is not a regular file is refused first."""
    check_regular_file(path, error)
    return h5py.File(path, "r")


# The attribute that holds a layer's name when its HDF5 group cannot be named after it.
NAME_ATTR = "caffe_name"


def _plain(name):
    # An HDF5 link name cannot hold '/' (a path: BVLC's H5Gcreate2 fails on "conv1/7x7"), a
    # NUL, or be empty or '.'.
    return bool(name) and name != "." and "/" not in name and "\0" not in name


def group_names(names):
    """{layer name: HDF5 group name}: a name HDF5 can hold is its own group name (the file is
    BVLC's); any other ('a/b', '.', '') gets an escaped, unused group name and the real name in
    the group's caffe_name attribute (UTF-8 bytes), which BVLC ignores and pycaffe reads."""
    out = {n: n for n in names if _plain(n)}
    taken = set(out)
    for name in names:
        if name in out:
            continue
        base = (name.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
                or "%")
        base = "%2E" if base == "." else base
        group, k = base, 1
        while group in taken:
            group, k = f"{base}~{k}", k + 1
        out[name] = group
        taken.add(group)
    return out


def write_layer_name(group, name):
    """Record a layer name whose group name is escaped (group_names)."""
    group.attrs.create(NAME_ATTR, np.frombuffer(name.encode("utf-8"), np.uint8))


def layer_name(lg, group_name, path, error):
    """The layer name a weights group stands for: its caffe_name attribute, else its name."""
    if NAME_ATTR not in lg.attrs:
        return group_name
    attr = h5py.h5a.open(lg.id, NAME_ATTR.encode())
    where = f"{path}: {lg.name}: attribute {NAME_ATTR}"
    if attr.dtype != np.uint8 or len(attr.shape) != 1 or attr.shape[0] > 1 << 16:
        raise error(f"{where} must be the layer name's UTF-8 bytes (uint8, at most 65536)")
    value = np.empty(attr.shape, np.uint8)
    if value.size:
        attr.read(value)
    try:
        return value.tobytes().decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{where} is not UTF-8 text") from None
