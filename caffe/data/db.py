"""Caffe's key-value databases (LMDB, LevelDB) and the Datum records stored in them.

Layout as BVLC writes it: an LMDB is a folder holding data.mdb and lock.mdb, a LevelDB a folder
of LevelDB files; keys are byte strings read back in byte order; each value is a serialized
caffe.Datum holding either raw uint8 pixels (`data`, C x H x W), floats (`float_data`) or an
encoded image file (`encoded: true`, PNG/JPEG bytes in `data`).

    with open_db("train_lmdb", "lmdb") as db:
        for key, value in db:
            image, label = datum_to_array(parse_datum(value, key)), ...

Readers of one database share one handle per process (LMDB refuses a second environment on the
same path; LevelDB locks its folder), so a train and a test net may read the same source.
"""
import logging
import os
import threading

import numpy as np
from google.protobuf.message import DecodeError

from .._optional import require
from ..blob import checked_count
from ..files import check_folder_files
from ..errors import DataError  # noqa: F401  (also importable from here, as before)
from ..proto import caffe_pb2
from .lmdb_size import check_lmdb_size

log = logging.getLogger("caffe")

LMDB_INITIAL_MAP_SIZE = 1 << 26     # grown by doubling, as Caffe's LMDB writer does
COMMIT_EVERY = 1000                 # Caffe's tools commit every 1000 records
MAX_MAP_RESIZES = 100               # a reader adopts a writer's grown LMDB map this often


def backend_name(backend):
    """'lmdb' or 'leveldb' from a name (any case) or DataParameter.DB enum value."""
    if isinstance(backend, str):
        name = backend.lower()
    else:
        name = {caffe_pb2.DataParameter.LMDB: "lmdb",
                caffe_pb2.DataParameter.LEVELDB: "leveldb"}.get(backend, str(backend))
    if name not in ("lmdb", "leveldb"):
        raise DataError(f"unknown database backend '{backend}' (use lmdb or leveldb)")
    return name


def open_db(path, backend="lmdb", mode="r"):
    """Open a database: mode 'r' (read), 'new' (create; must not exist) or 'w' (create or add)."""
    if mode not in ("r", "new", "w"):
        raise DataError(f"open_db: mode must be 'r', 'new' or 'w', not '{mode}'")
    cls = {"lmdb": LMDB, "leveldb": LevelDB}[backend_name(backend)]
    return cls(os.fspath(path), mode)


class _Shared:
    """One read handle per (backend, real path), reference-counted across readers."""

    # Re-entrant: a garbage collection inside acquire() (opening allocates) can finalize
    # another net whose data source then releases its handle on this same thread; with a
    # plain Lock that thread waited for itself forever (seen in a full test run).
    lock = threading.RLock()
    handles: dict = {}

    @classmethod
    def acquire(cls, key, opener):
        with cls.lock:
            entry = cls.handles.get(key)
            if entry is None:
                entry = cls.handles[key] = [opener(), 0]
            entry[1] += 1
            return entry[0]

    @classmethod
    def release(cls, key, closer):
        with cls.lock:
            entry = cls.handles.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del cls.handles[key]
                closer(entry[0])


class _DB:
    """Shared behaviour: iteration in key order, buffered writes, context manager."""

    backend = ""
    # the names in the folder the library opens (None: all of them)
    files: "tuple[str, ...] | None" = None

    def __init__(self, path, mode):
        self.path, self.mode = path, mode
        self._pending = []
        self._closed = False
        if mode == "r":
            if not os.path.exists(path):
                raise DataError(f"{self.backend} database '{path}' does not exist")
            if not os.path.isdir(path):
                raise DataError(f"{self.backend} database '{path}' is not a folder")
            # The library opens the folder's files itself: a FIFO among them would hang it.
            check_folder_files(path, DataError, f"{self.backend} database", self.files)
            self._key = (self.backend, os.path.realpath(path))
            self._handle = _Shared.acquire(self._key, self._open_read)
        else:
            if mode == "new" and os.path.exists(path):
                raise DataError(f"cannot create {self.backend} database '{path}': it already "
                                f"exists")
            if os.path.isdir(path):
                check_folder_files(path, DataError, f"{self.backend} database", self.files)
            self._handle = self._open_write()

    def __iter__(self):
        return self.cursor()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def put(self, key, value):
        """Queue one record; records are written at commit() (and every COMMIT_EVERY puts)."""
        if self.mode == "r":
            raise DataError(f"{self.backend} database '{self.path}' is open read-only")
        self._pending.append((_bytes(key), bytes(value)))
        if len(self._pending) >= COMMIT_EVERY:
            self.commit()

    def commit(self):
        if self._pending:
            self._write(self._pending)
            self._pending = []

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self.mode == "r":
            _Shared.release(self._key, self._close_handle)
        else:
            self.commit()
            self._close_handle(self._handle)

    def _read_error(self, error, last_key, action="read"):
        """The library's exception as a DataError naming the database and the record."""
        detail = error.args[0] if error.args else error
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        after = f" after record '{_name(last_key)}'" if last_key is not None else ""
        return DataError(f"{self.backend} database '{self.path}' cannot be {action}{after}: "
                         f"{type(error).__name__}: {detail}")

    def __repr__(self):
        return f"<{self.backend} database '{self.path}' ({self.mode})>"


class LMDB(_DB):
    backend = "lmdb"
    files = ("data.mdb", "lock.mdb")

    def _open_read(self):
        import lmdb
        check_lmdb_size(self.path)
        try:
            # No lock file: reading must not write into (possibly read-only) shared folders.
            return lmdb.open(self.path, readonly=True, lock=False, readahead=False)
        except lmdb.Error as e:
            raise DataError(f"lmdb database '{self.path}' cannot be opened: {e}") from None

    def _open_write(self):
        import lmdb
        check_lmdb_size(self.path)     # appending to a truncated file would crash too
        try:
            os.makedirs(self.path, exist_ok=True)
            return lmdb.open(self.path, map_size=LMDB_INITIAL_MAP_SIZE, meminit=False)
        except (OSError, lmdb.Error) as e:
            raise DataError(f"lmdb database '{self.path}' cannot be created: {e}") from None

    @staticmethod
    def _close_handle(env):
        env.close()

    def _write(self, records):
        import lmdb
        while True:
            try:
                with self._handle.begin(write=True) as txn:
                    for key, value in records:
                        if not 0 < len(key) <= self._handle.max_key_size():
                            raise DataError(f"lmdb database '{self.path}': key {key[:40]!r} "
                                            f"has {len(key)} bytes; LMDB keys have 1 to "
                                            f"{self._handle.max_key_size()}")
                        txn.put(key, value)
                return
            except lmdb.MapFullError:
                size = self._handle.info()["map_size"] * 2
                log.info("Doubling LMDB map size to %d MB", size >> 20)
                self._handle.set_mapsize(size)
            except lmdb.Error as e:     # disk full, I/O error: name the database
                raise self._read_error(e, None, "written") from None

    def cursor(self):
        """(key, value) pairs in key order, from one read transaction.

        A writer growing the map (convert_imageset while we read) makes LMDB raise
        MapResizedError: the reader adopts the new size and goes on after the last key read.
        """
        import lmdb
        last = None
        for _ in range(MAX_MAP_RESIZES):
            try:
                txn = self._handle.begin(buffers=False)
                try:
                    cursor = txn.cursor()
                    found = cursor.first() if last is None else cursor.set_range(last)
                    if found and last is not None and cursor.key() == last:
                        found = cursor.next()
                    if not found:
                        return
                    for key, value in cursor.iternext():
                        last = key
                        yield key, value
                    return
                finally:
                    txn.abort()
            except lmdb.MapResizedError:
                self._adopt_map_size()
            except lmdb.Error as e:
                raise self._read_error(e, last) from None
        raise DataError(f"lmdb database '{self.path}': its map was resized "
                        f"{MAX_MAP_RESIZES} times while reading; is it still being written?")

    def _adopt_map_size(self):
        import lmdb
        try:
            self._handle.set_mapsize(0)     # 0: the size the writer left in the file
        except lmdb.Error as e:
            raise self._read_error(e, None) from None

    def __len__(self):
        return self._retry(lambda: self._handle.stat()["entries"])

    def get(self, key):
        def get():
            with self._handle.begin() as txn:
                return txn.get(_bytes(key))
        return self._retry(get)

    def _retry(self, call):
        import lmdb
        for _ in range(MAX_MAP_RESIZES):
            try:
                return call()
            except lmdb.MapResizedError:
                self._adopt_map_size()
            except lmdb.Error as e:
                raise self._read_error(e, None) from None
        raise DataError(f"lmdb database '{self.path}': its map keeps being resized")


class LevelDB(_DB):
    backend = "leveldb"

    def _open_read(self):
        return self._plyvel_open(create_if_missing=False)

    def _open_write(self):
        # Caffe's options: 64 KB blocks, a 256 MB write buffer.
        return self._plyvel_open(create_if_missing=True, error_if_exists=self.mode == "new",
                                 block_size=65536, write_buffer_size=268435456)

    def _plyvel_open(self, **options):
        plyvel = require("plyvel", extra="leveldb", feature="LevelDB databases")
        try:
            return plyvel.DB(self.path, max_open_files=100, **options)
        except (plyvel.Error, OSError) as e:
            detail = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) \
                else str(e)
            raise DataError(f"leveldb database '{self.path}' cannot be opened: {detail}") from None

    @staticmethod
    def _close_handle(db):
        db.close()

    def _write(self, records):
        import plyvel
        try:
            with self._handle.write_batch() as batch:
                for key, value in records:
                    batch.put(key, value)
        except plyvel.Error as e:
            raise self._read_error(e, None, "written") from None

    def cursor(self):
        plyvel = require("plyvel", extra="leveldb", feature="LevelDB databases")
        last, it = None, None
        try:
            it = self._handle.iterator()
            for last, value in it:
                yield last, value
        except plyvel.Error as e:
            raise self._read_error(e, last) from None
        finally:
            if it is not None:
                it.close()

    def __len__(self):
        import plyvel
        try:
            return sum(1 for _ in self._handle.iterator(include_value=False))
        except plyvel.Error as e:
            raise self._read_error(e, None) from None

    def get(self, key):
        import plyvel
        try:
            return self._handle.get(_bytes(key))
        except plyvel.Error as e:
            raise self._read_error(e, None) from None


def _bytes(key):
    return key.encode() if isinstance(key, str) else bytes(key)


def _name(key):
    return key.decode(errors="replace") if isinstance(key, (bytes, bytearray)) else str(key)


# -- Datum ------------------------------------------------------------------------------
def parse_datum(value, key="?"):
    """A Datum from a record value; DataError when the value is not one."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise DataError(f"record '{_name(key)}' is not a Datum: {e}") from None
    if not datum.data and not len(datum.float_data):
        raise DataError(f"record '{_name(key)}' is not a Datum: it holds no pixel data")
    return datum


def datum_to_array(datum, key="?", color=None, contiguous=True):
    """The Datum's image as a C x H x W array: uint8 for raw or encoded pixels, float32 for floats.

    Encoded images are decoded as Caffe's DecodeDatumToCVMat: color None keeps their own
    channel count, True forces 3 channels (BGR), False forces grey. contiguous=False returns
    a decoded image as a strided C x H x W view of the decoder's pixels (no copy).
    """
    if datum.encoded:
        from .image import decode_image, hwc_to_chw
        img = decode_image(datum.data, color, f"record '{_name(key)}'", contiguous)
        return hwc_to_chw(img) if contiguous else img.transpose(2, 0, 1)
    shape = (datum.channels, datum.height, datum.width)
    if min(shape) <= 0:
        raise DataError(f"record '{_name(key)}': Datum has invalid size {shape[0]}x{shape[1]}x"
                        f"{shape[2]} (channels x height x width)")
    size = checked_count(shape, f"record '{_name(key)}': Datum", DataError)
    shape, values = datum_values(datum)
    what = "bytes of data" if datum.data else "float_data values"
    if values.size != size:
        raise DataError(f"record '{_name(key)}': Datum says {shape[0]}x{shape[1]}x{shape[2]} "
                        f"= {size} values but holds {values.size} {what}")
    return values.reshape(shape)


def datum_values(datum, float_dtype=np.float32):
    """A raw (not encoded) Datum's declared (channels, height, width) and its values, flat:
    uint8 from `data`, else `float_dtype` from `float_data`."""
    shape = (datum.channels, datum.height, datum.width)
    if datum.data:
        return shape, np.frombuffer(datum.data, dtype=np.uint8)
    return shape, np.asarray(datum.float_data, dtype=float_dtype)


def array_to_datum(arr, label=None):
    """A Datum from a C x H x W array: uint8 arrays go to `data`, others to `float_data`."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise DataError(f"a Datum holds a 3-D (channels, height, width) array, got shape "
                        f"{arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float32).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def image_to_datum(img, label, encoded=None):
    """Caffe's CVMatToDatum (HxWxC uint8 image) or, with encoded bytes, an encoded Datum."""
    datum = caffe_pb2.Datum()
    if encoded is not None:
        datum.data = encoded
        datum.label = int(label)
        datum.encoded = True
        return datum
    datum.channels, datum.height, datum.width = img.shape[2], img.shape[0], img.shape[1]
    datum.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
    datum.label = int(label)
    datum.encoded = False      # Caffe sets it explicitly, so it is part of the record's bytes
    return datum
