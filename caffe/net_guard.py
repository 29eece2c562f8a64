"""One thread at a time in a Net: concurrent calls fail with a clear error, never mix results.

A Net holds one set of activations: forward writes its input blobs, every layer's tops and the
outputs it returns (views of those tops), backward their diffs. Two threads in one Net at once
overwrite each other's blobs, and each gets a mix of the two runs, silently (4 threads calling
forward on one Net gave 119 wrong results of 800). BVLC's Net is not thread-safe either; here
its public entry points (forward, backward, reshape and the calls that run them) hold a
non-blocking lock instead: a second thread entering while the first is inside raises
NetInUseError at once, naming both threads. The owning thread may re-enter (pycaffe's forward
calls forward_from_to; a Python layer may run its own net's parts). The check costs one lock
acquire and release per call, well under a microsecond.

pycaffe's forward and backward return views of the output blobs, as BVLC's do: the next call
overwrites them. Within one thread that is the familiar contract; across threads, the next call
may come from another thread between the return and the caller's copy. So once a second
thread has entered a Net, its forward and backward return copies, made before the lock is
released (used_by_threads); a Net only ever used by one thread keeps BVLC's views.

The contract (docs/reliability.md, "Threads"): give each thread its own Net, sharing the
weights of one loaded Net (net.share_with(loaded)) or loading them itself
(caffe.Net(model, weights, caffe.TEST)); or take turns (a lock around each call), never enter
one Net from two threads at once.
"""
import functools
import threading
from typing import Any, Callable, TypeVar, cast

from .errors import NetError


class NetInUseError(NetError):
    """A Net entered by a second thread while another one is running it."""


class _Guard:
    __slots__ = ("lock", "owner", "what", "first", "threads")

    def __init__(self):
        self.lock = threading.Lock()
        self.owner = None           # the thread ident inside, while one is
        self.what = ""
        self.first = None           # the first thread that entered
        self.threads = False        # whether another thread has entered since

    # A copied or unpickled Net is a new Net: it gets a free guard of its own.
    def __deepcopy__(self, memo):
        return _Guard()

    def __reduce__(self):
        return _Guard, ()


def _guard(net):
    guard = net.__dict__.get("_thread_guard")
    if guard is None:
        # setdefault is atomic: two threads racing here end up with the same guard.
        guard = net.__dict__.setdefault("_thread_guard", _Guard())
    return guard


def _thread_name(ident):
    if ident is None:
        return "another thread"     # it took the lock a moment ago and has not named itself
    for thread in threading.enumerate():
        if thread.ident == ident:
            return f"thread '{thread.name}'"
    return f"thread id {ident}"


def _in_use(net, guard, what):
    owner, running = guard.owner, guard.what
    name = getattr(net, "name", "") or "(unnamed)"
    return NetInUseError(
        f"net '{name}': {what} called from thread '{threading.current_thread().name}' while "
        f"{_thread_name(owner)} is running {running or 'it'}. A Net is not "
        f"thread-safe (nor is BVLC's): its blobs hold one input and one result at a time, so "
        f"the two calls would mix them. Give each thread its own Net sharing the weights "
        f"(net.share_with(loaded_net), or caffe.Net(model, weights, caffe.TEST) per thread), "
        f"or let the threads take turns (a lock of your own around each call).")


_get_ident = threading.get_ident


def used_by_threads(net):
    """Whether more than one thread has run `net`: its outputs are then returned as copies."""
    return _guard(net).threads


_Method = TypeVar("_Method", bound=Callable[..., Any])


def exclusive(what: str) -> Callable[[_Method], _Method]:
    """Decorator for a Net entry point: one thread at a time; the owner may re-enter.
    Typed so that the method keeps its signature for type checkers (py.typed)."""
    def wrap(method: _Method) -> _Method:
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            guard = self.__dict__.get("_thread_guard") or _guard(self)
            me = _get_ident()
            if guard.owner == me:           # only this thread ever sets its own ident
                return method(self, *args, **kwargs)
            if not guard.lock.acquire(False):
                raise _in_use(self, guard, what)
            try:                            # at once: a Ctrl-C must not leave it locked
                guard.owner, guard.what = me, what
                if guard.first is None:
                    guard.first = me
                elif guard.first != me:
                    guard.threads = True
                return method(self, *args, **kwargs)
            finally:
                guard.owner = None
                guard.lock.release()
        return cast(_Method, run)
    return wrap
