"""Background prefetching of batches, as Caffe's BasePrefetchingDataLayer does it.

A daemon thread calls `source.load_batch()` and keeps up to `count` batches queued (Caffe's
data_param.prefetch, default 4); the consumer takes them with `next()`. An exception in the thread
is handed over and re-raised by the consumer. The thread never refers to the layer that owns the
Prefetcher, so the layer can be garbage-collected; when the Prefetcher goes (or the interpreter
exits) a finalizer stops the thread, and the thread closes its source (databases) on the way out.
`count=0` loads each batch synchronously inside next(), with no thread at all.
"""
import logging
import queue
import threading
import weakref

from ..errors import DataError


log = logging.getLogger("caffe")

JOIN_TIMEOUT = 10.0


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error


def _produce(source, batches, stop):
    try:
        while not stop.is_set():
            try:
                item = source.load_batch()
            except BaseException as e:      # handed to the consumer, which re-raises it
                item = _Failure(e)
            while not stop.is_set():
                try:
                    batches.put(item, timeout=0.1)
                    break
                except queue.Full:
                    pass
            if isinstance(item, _Failure):
                return
    finally:
        _close(source)


def _close(source):
    close = getattr(source, "close", None)
    if close is not None:
        close()


def _stop(stop, batches, thread):
    stop.set()
    # Free a slot so that a producer blocked on a full queue sees the stop event.
    try:
        while True:
            batches.get_nowait()
    except queue.Empty:
        pass
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(JOIN_TIMEOUT)


class Prefetcher:
    """Batches from `source.load_batch()`, produced `count` ahead in a background thread."""

    def __init__(self, source, count=4, name="prefetch"):
        self.count = int(count)
        self._failure = None
        if self.count <= 0:
            self._source = source
            self._finalizer = weakref.finalize(self, _close, source)
            return
        self._queue = queue.Queue(maxsize=self.count)
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=_produce, name=name, daemon=True,
                                        args=(source, self._queue, self._stop_event))
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop, self._stop_event, self._queue,
                                           self._thread)

    def next(self):
        """The next batch; re-raises an error the producer met."""
        if self._failure is not None:
            raise self._failure
        if self.count <= 0:
            return self._source.load_batch()
        while True:
            try:
                item = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise DataError(f"{self._thread.name}: the prefetch thread has stopped") \
                        from None
                log.debug("Waiting for data")
        if isinstance(item, _Failure):
            self._failure = item.error
            self.close()
            raise item.error
        return item

    def close(self):
        """Stop the thread (if any) and release the source; later next() calls fail."""
        self._finalizer()
        if self._failure is None:
            self._failure = DataError("the prefetcher was closed")

    @property
    def alive(self):
        return self.count > 0 and self._thread.is_alive()
