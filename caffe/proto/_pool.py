"""The private descriptor pool caffe_pb2 registers its schema in.

BVLC's caffe_pb2, a converter's copy or any other module generated from a file named
caffe.proto registers "caffe.proto" and the "caffe.*" message names in protobuf's default
pool; two such modules in one process then fail with ``duplicate file name caffe.proto``.
Ours lives in a pool of its own, so any number of them can be imported beside it.

protobuf's builder also records every generated class in the default symbol database
(and, under the pure-Python backend, copies its descriptors into the default pool);
:func:`private_symbols` points that bookkeeping at a database of our own while
caffe_pb2 builds its classes.
"""
import contextlib

from google.protobuf import descriptor_pool, symbol_database
from google.protobuf.internal import builder

POOL = descriptor_pool.DescriptorPool()
SYMBOLS = symbol_database.SymbolDatabase(pool=POOL)


@contextlib.contextmanager
def private_symbols():
    """Register the classes built inside the block in :data:`SYMBOLS`, not the default one."""
    saved = builder._sym_db
    builder._sym_db = SYMBOLS
    try:
        yield SYMBOLS
    finally:
        builder._sym_db = saved
