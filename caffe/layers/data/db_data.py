"""Data: Datum records of an LMDB or LevelDB."""
import torch

from ... import parallel
from ...data.db import datum_to_array, open_db, parse_datum
from ...data.pipeline import BatchPipeline, check_batch, read_datum
from ...errors import DataError
from ...layer import register_layer
from .base import np_dtype, BasePrefetchingDataLayer, log


class _DBSource:
    """Datum records in key order, wrapping around at the end, made into transformed batches."""

    rank, count, offset = 0, 1, 0   # parallel.data_shard; records read so far

    def __init__(self, db, batch_size, transformer, skip, dtype):
        self.db, self.batch_size, self.transformer = db, batch_size, transformer
        self.skip, self.dtype = skip, dtype
        self._records = None
        self.pipeline, self.read = BatchPipeline(transformer), read_datum(transformer)

    def _next_record(self):
        for _ in range(2):
            if self._records is None:
                self._records = self.db.cursor()
            record = next(self._records, None)
            if record is not None:
                return record
            self._records = None
            log.info("Restarting data prefetching from start.")
        raise DataError(f"database '{self.db.path}' is empty")

    def _next_own_record(self):
        # With N workers, worker r keeps records r, r + N, ... (BVLC's DataLayer::Skip).
        while True:
            record = self._next_record()
            self.offset += 1
            if (self.offset - 1) % self.count == self.rank:
                return record

    def load_batch(self):
        for _ in range(self.skip):
            self._next_record()
        self.skip = 0
        # Records are read in order here; decoded and transformed on the pipeline's threads.
        records = [self._next_own_record() for _ in range(self.batch_size)]
        return self.pipeline.run(records, self.read, self.dtype)

    def close(self):
        self.pipeline.close()
        if self._records is not None:
            self._records.close()
        self.db.close()


@register_layer
class DataLayer(BasePrefetchingDataLayer):
    """Datum records of an LMDB or LevelDB (data_param.source) in key order: data and label."""

    type = "Data"
    min_top_blobs = 1
    max_top_blobs = 2

    def make_source(self, top):
        p = self.param.data_param
        if not p.source:
            self.fail("data_param.source (the database) is not set")
        if not p.batch_size:
            self.fail("data_param.batch_size must be positive")
        transformer = self.make_transformer()
        if p.force_encoded_color and transformer.color is None:
            transformer.color = True
        db = open_db(p.source, p.backend, "r")
        try:
            first = next(db.cursor(), None)
            if first is None:
                raise DataError(f"database '{p.source}' is empty")
            key, value = first
            image = datum_to_array(parse_datum(value, key), key, transformer.color)
            name = f"record '{key.decode(errors='replace')}'"
            shape = transformer.output_shape(image.shape, name)
        except DataError:
            db.close()
            raise
        check_batch(p.batch_size, shape, np_dtype(self.dtype), name)
        top[0].reshape((p.batch_size,) + shape)
        if len(top) > 1:
            top[1].reshape((p.batch_size,))
        # rand_skip (deprecated in Caffe): start up to rand_skip - 1 records into the database.
        skip = int(torch.randint(p.rand_skip, ())) if p.rand_skip else 0
        source = _DBSource(db, p.batch_size, transformer, skip, np_dtype(self.dtype))
        source.pipeline.expected, source.pipeline.expected_name = image.shape, name
        source.rank, source.count = parallel.data_shard(self.phase)
        return source
