"""Noticing a worker that stops answering, in seconds rather than after the collective timeout.

Every worker of a `caffe train` run adds 1 to its own counter in the rendezvous TCPStore
(torch.distributed's key-value store that the workers met through) every `period` seconds,
from a thread, and reads the others' counters. A counter that has not moved for
CAFFE_DIST_HEARTBEAT seconds (default 60) belongs to a worker that is stopped (SIGSTOP, a
debugger), hung outside Python's reach, or cut off from the network; a store that does not
answer for that long means the host serving it (worker 0's, or torchrun's agent on node 0)
is gone. Either way the watcher calls `on_lost(message)`, which ends this worker with an error
naming the silent one. A busy worker (testing, writing a snapshot) keeps beating: the thread
runs while the main thread computes.
"""
import datetime
import logging
import os
import threading
import time

import torch.distributed as dist

log = logging.getLogger("caffe.parallel")


def rendezvous_store(timeout_s):
    """A client of the TCPStore at MASTER_ADDR:MASTER_PORT (None when there is none)."""
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port:
        return None
    store = dist.TCPStore(host, int(port), is_master=False,
                          timeout=datetime.timedelta(seconds=timeout_s),
                          wait_for_workers=False)
    return dist.PrefixStore("caffe/heartbeat/", store), f"{host}:{port}"


class Heartbeat:
    """Beat for `rank` and watch the other ranks' beats in `store` (see the module's text)."""

    def __init__(self, store, where, rank, world, stall_s, on_lost, describe=None,
                 store_owner=None):
        self.store, self.where = store, where
        self.rank, self.world = rank, world
        self.stall_s = float(stall_s)
        self.period = min(1.0, self.stall_s / 5)
        self.on_lost = on_lost
        self.describe = describe or (lambda r: f"worker {r}")
        self.store_owner = store_owner
        self.heard = {}               # rank -> (counter, monotonic time it last moved)
        self._stop = threading.Event()
        self._error = ""
        # Two threads: a store call to a host that is cut off can block past its timeout, and
        # the watcher must still see the time go by.
        self._threads = [threading.Thread(target=self._beat_loop, name="caffe-heartbeat",
                                          daemon=True),
                         threading.Thread(target=self._watch_loop, name="caffe-heartbeat-watch",
                                          daemon=True)]

    def start(self):
        now = time.monotonic()
        self.heard = {r: (-1, now) for r in range(self.world) if r != self.rank}
        self._store_ok = now
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        self._stop.set()

    def silent(self, for_s):
        """The other ranks whose counters have not moved for `for_s` seconds."""
        now = time.monotonic()
        return [r for r, (_, t) in sorted(self.heard.items()) if now - t >= for_s]

    def _beat(self):
        self.store.add(str(self.rank), 1)
        now = time.monotonic()
        for r, (count, since) in list(self.heard.items()):
            # add(key, 0) reads a counter without waiting for it to exist.
            value = self.store.add(str(r), 0)
            if value != count:
                self.heard[r] = (value, now)
        self._store_ok = now

    def _beat_loop(self):
        while not self._stop.wait(self.period):
            try:
                self._beat()
            except Exception as e:           # the store's own errors: timeouts, resets
                self._error = str(e).splitlines()[0] if str(e) else type(e).__name__

    def _watch_loop(self):
        while not self._stop.wait(self.period):
            quiet = time.monotonic() - self._store_ok
            if quiet >= self.stall_s:
                owner = f", served by {self.store_owner}," if self.store_owner else ""
                cause = f" ({self._error})" if self._error else ""
                self._lost(f"the rendezvous store at {self.where}{owner} has not answered for "
                           f"{quiet:.0f} s (CAFFE_DIST_HEARTBEAT={self.stall_s:g}): its host is "
                           f"gone or cut off{cause}")
                return
            silent = self.silent(self.stall_s)
            if silent:
                names = ", ".join(self.describe(r) for r in silent)
                self._lost(f"{names} {'has' if len(silent) == 1 else 'have'} not been heard from "
                           f"for {self.stall_s:g} s (CAFFE_DIST_HEARTBEAT): stopped, hung, "
                           f"or cut off from the network")
                return

    def _lost(self, message):
        if not self._stop.is_set():
            self.on_lost(message)
