"""LMDB files checked against their own meta pages before they are mapped."""
import os
import sys

from ..errors import DataError

# LMDB's meta pages (pages 0 and 1 of data.mdb, 64-bit build, the machine's byte order): a
# 16-byte page header, then MDB_meta: magic, version, address, mapsize, two MDB_db records of
# 48 bytes (the first one's md_pad holds the page size), mm_last_pg, mm_txnid.
_LMDB_MAGIC = 0xBEEFC0DE
_META_MAGIC, _META_PAGE_SIZE, _META_LAST_PAGE, _META_TXNID = 16, 40, 136, 144


def check_lmdb_size(path):
    """Refuse an LMDB whose data.mdb is shorter than its own meta page says it is.

    LMDB maps the file and reads pages straight from the mapping: a page past the end of a
    truncated file (a copy cut short, a full disk) kills the process with SIGBUS, with no
    message. The newest meta page records the last page used; the file must reach it.
    """
    name = os.path.join(path, "data.mdb")
    try:
        with open(name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_META_TXNID + 8)
            if len(head) < _META_TXNID + 8:
                raise DataError(f"lmdb database '{path}': {name} has {size} bytes, too short "
                                f"for LMDB's first meta page: the file is truncated or not "
                                f"an LMDB")
            magic, page_size = _unpack_u32(head, _META_MAGIC), _unpack_u32(head, _META_PAGE_SIZE)
            if magic != _LMDB_MAGIC or not 512 <= page_size <= 1 << 20:
                return      # not a 64-bit LMDB we can read: lmdb.open says what it is
            f.seek(page_size)
            second = f.read(_META_TXNID + 8)
    except FileNotFoundError:
        return              # a new database: LMDB creates the file
    except OSError as e:
        raise DataError(f"lmdb database '{path}': cannot read {name}: {e}") from None
    metas = [head]
    if len(second) == _META_TXNID + 8 and _unpack_u32(second, _META_MAGIC) == _LMDB_MAGIC:
        metas.append(second)
    elif size >= 2 * page_size:
        return              # a damaged second meta page: left to LMDB's own checks
    meta = max(metas, key=lambda m: _unpack_u64(m, _META_TXNID))
    needed = (_unpack_u64(meta, _META_LAST_PAGE) + 1) * page_size
    needed = max(needed, 2 * page_size)
    if size < needed:
        raise DataError(f"lmdb database '{path}': {name} is truncated: it has {size} bytes, "
                        f"but its meta page records {needed // page_size} pages of "
                        f"{page_size} bytes ({needed} bytes); reading it would crash the "
                        f"process (SIGBUS). Copy or convert the database again.")


def _unpack_u32(data, offset):
    return int.from_bytes(data[offset:offset + 4], sys.byteorder)


def _unpack_u64(data, offset):
    return int.from_bytes(data[offset:offset + 8], sys.byteorder)
