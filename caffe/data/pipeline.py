"""Batches decoded and transformed on several threads, equal byte for byte to the one-thread path.

A prefetching data layer's source hands a batch's records to a BatchPipeline with a function that
reads one record (parse the Datum, decode the JPEG/PNG, or read and resize an image file) into a
C x H x W array. Pillow's decoders and NumPy's arithmetic release the GIL, so the records are
split into small contiguous chunks that the threads (the prefetch thread among them) take in
turn; each thread decodes its records and crops, mirrors and mean-subtracts them straight into
the batch, while the image is still in cache.

Same numbers, same order: the transformer's random draws (mirror, then crop row, then crop
column, image after image) are made up front on the prefetch thread for the image size the
batch is expected to have (the previous image's). Should a record turn out to have another size,
the generator is put back to where it was and the batch is transformed by the transformer
itself, as before. Errors keep their meaning too: the first bad record in batch order raises its
own DataError, as the one-thread loop would have.
"""
import collections
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import memory
from .. import threads as _threads
from ..errors import DataError

# Records per hand-off: at least MIN_CHUNK (below that the hand-off costs more than it saves),
# about CHUNKS_PER_THREAD hand-offs per thread and batch so that the threads finish together.
MIN_CHUNK = 4
CHUNKS_PER_THREAD = 4
# The most bytes one transformed batch may take. BVLC allocates whatever the first record's
# size times batch_size asks (8 PNGs of 8000x8000 are 5.7 GiB of float32); real batches are
# far below this (256 x 3 x 227 x 227 floats: 158 MB; 16 x 3 x 1024 x 2048: 403 MB).
# Raise it for larger ones. Below it, a batch must still fit the memory left (caffe.memory).
MAX_BATCH_BYTES = 2 ** 32


def check_batch(count, shape, dtype, source):
    """Refuse a batch of `count` arrays of `shape` before allocating it: beyond
    MAX_BATCH_BYTES, or beyond the memory this process can still take. `source` names the
    record whose size sets the shape."""
    nbytes = count * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    what = (f"{source}: a batch of {count} images of shape {tuple(shape)} "
            f"({np.dtype(dtype).name})")
    if nbytes > MAX_BATCH_BYTES:
        raise DataError(f"{what} takes {nbytes} bytes ({nbytes / 2 ** 30:.1f} GiB), more than "
                        f"the limit {MAX_BATCH_BYTES} (caffe.data.pipeline.MAX_BATCH_BYTES); "
                        f"lower batch_size, crop or resize the images, or raise the limit")
    memory.check_allocation(nbytes, what, DataError)


def default_threads():
    """Decode threads: CAFFE_DATA_THREADS, else this process's share of the CPUs."""
    value = os.environ.get("CAFFE_DATA_THREADS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise DataError(f"CAFFE_DATA_THREADS must be a whole number, not '{value}'") \
                from None
    return _threads.pipeline_threads()


class _Plan:
    """The draws for one batch, made for an expected image shape."""

    __slots__ = ("shape", "corners", "mirrors")

    def __init__(self, shape, corners, mirrors):
        self.shape, self.corners, self.mirrors = shape, corners, mirrors


def _plan_size(plan):
    return int(np.prod(plan.shape)) if plan is not None else 0


class BatchPipeline:
    """run(records, read) -> (N x C x h x w batch, labels); read(record) -> (C x H x W array,
    label, name). The array may be a strided view (e.g. BGR over a decoder's RGB pixels)."""

    def __init__(self, transformer, threads=None, pin=False):
        self.transformer = transformer
        self.threads = default_threads() if threads is None else max(1, int(threads))
        # pin: batches come as page-locked torch tensors, for an asynchronous copy to a GPU.
        self.pin = pin
        self._pool = None
        # The C x H x W shape the next image should have: the last one seen (a source sets
        # the first record's), and the name of the record it came from, for errors.
        self.expected = None
        self.expected_name = "the first record"
        self.fallbacks = 0          # planned batches the transformer redid (another size)
        # Batches the consumer has copied out, for reuse: a fresh 80 MB batch costs ~20000
        # page faults on first touch (BVLC too reuses its prefetch batches).
        self._spare = collections.deque(maxlen=2)

    def _plan(self, count):
        t = self.transformer
        if self.expected is None:
            return None
        c, h, w = self.expected
        crop = t.param.crop_size
        if crop and (h < crop or w < crop):
            return None
        mirrors, corners = [], []
        for _ in range(count):
            corner, mirror = t.draw((h, w))
            corners.append(corner)
            mirrors.append(mirror)
        return _Plan(self.expected, corners, mirrors)

    def run(self, records, read, label_dtype=np.float32):
        """The transformed batch of `records`, read one by one with read(record), and labels."""
        t = self.transformer
        n = len(records)
        if n == 0:
            raise DataError("there is no image to transform")
        state = t.rng.bit_generator.state
        plan = self._plan(n)
        out = None
        if plan is not None:
            try:
                shape = t.output_shape(plan.shape, "image")
            except DataError:
                plan = None
            else:
                check_batch(n, shape, t.dtype, self.expected_name)
                pinned = self._empty((n,) + shape)
                out = pinned.numpy() if self.pin else pinned
        images, labels, names = [None] * n, [0] * n, [None] * n
        fits = [False] * n

        def work(lo, hi):
            # The largest image off the plan in this chunk so far: only a larger one is
            # checked again. Per chunk, so the first bad record in batch order is the one named.
            largest = _plan_size(plan)
            for i in range(lo, hi):
                try:
                    img, labels[i], names[i] = read(records[i])
                except DataError as e:
                    return i, e
                images[i] = img
                if plan is not None and img.shape == plan.shape:
                    t._window(img, out[i], plan.corners[i], plan.mirrors[i])
                    fits[i] = True
                elif img.size > largest:
                    # Another size: refused now if a batch of it cannot be, before the
                    # other records are decoded too (8 such PNGs decoded are 1.5 GB).
                    largest = img.size
                    try:
                        check_batch(n, t.output_shape(img.shape, names[i]), t.dtype, names[i])
                    except DataError as e:
                        return i, e
            return None

        failure = self._run(work, n)
        if failure is not None:
            images.clear()      # the error's traceback must not keep the decoded images alive
            raise failure[1]
        self.expected, self.expected_name = images[-1].shape, names[-1]
        labels = np.asarray(labels, dtype=label_dtype)
        if plan is not None and all(fits):
            return pinned, labels
        # Images of other sizes: the largest sets what the transformer will allocate.
        largest = max(range(n), key=lambda i: images[i].size)
        check_batch(n, t.output_shape(images[largest].shape, names[largest]), t.dtype,
                    names[largest])
        # Another size in the batch: undo the draws and let the transformer do it as before.
        t.rng.bit_generator.state = state
        self.fallbacks += plan is not None
        if not t.needs_rand and all(i.shape == images[0].shape for i in images):
            data = t(np.stack(images), names)
        else:
            data = t(images, names)
        if self.pin:
            pinned = self._empty(data.shape)
            np.copyto(pinned.numpy(), data)     # NumPy's copy: no OpenMP team on this thread
            data = pinned
        return data, labels

    def give_back(self, batch):
        """A batch the consumer is done with (copied out): its memory is used again."""
        if isinstance(batch, np.ndarray):
            self._spare.append(batch)

    def _empty(self, shape):
        if not self.pin:
            while self._spare:
                try:
                    spare = self._spare.popleft()
                except IndexError:          # taken meanwhile
                    break
                if spare.shape == shape and spare.dtype == self.transformer.dtype:
                    return spare
            return np.empty(shape, dtype=self.transformer.dtype)
        import torch
        dtype = torch.float64 if self.transformer.dtype == np.float64 else torch.float32
        return torch.empty(shape, dtype=dtype, pin_memory=True)

    def _run(self, work, n):
        """work(lo, hi) over chunks of the records on the threads; the first failure in order.

        Chunks are handed out as the threads come for them (a thread that the scheduler holds
        back takes fewer), and every chunk is done, so the failure with the lowest index is
        the first bad record of the batch.
        """
        size = max(MIN_CHUNK, -(-n // (self.threads * CHUNKS_PER_THREAD)))
        starts = iter(range(0, n, size))        # shared: each next() is atomic under the GIL
        failures = []

        def loop():
            for lo in starts:
                failure = work(lo, min(lo + size, n))
                if failure is not None:
                    failures.append(failure)

        helpers = min(self.threads - 1, -(-n // size) - 1)
        if helpers > 0 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="caffe-decode")
        futures = [self._pool.submit(loop) for _ in range(helpers)]
        loop()                                  # the prefetch thread works too
        for f in futures:
            f.result()
        return min(failures, key=lambda f: f[0]) if failures else None

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def read_datum(transformer):
    """read(record) for (key, value) Datum records, decoding as the transformer's colour asks."""
    from .db import datum_to_array, parse_datum

    def read(record):
        key, value = record
        datum = parse_datum(value, key)
        img = datum_to_array(datum, key, transformer.color, contiguous=False)
        return img, datum.label, f"record '{key.decode(errors='replace')}'"
    return read
