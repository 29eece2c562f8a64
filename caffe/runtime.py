"""The small process utilities of BVLC's boost-python module: glog, Timer and has_nccl.

    caffe.init_log()                    # glog-format lines on stderr from here on
    caffe.init_log(1)                   # ... WARNING and above (glog's minloglevel)
    caffe.init_log(0, False)            # ... into a glog-named file in the temp folder
    caffe.log("Using devices [0]")      # one INFO line, as LOG(INFO) << s
    t = caffe.Timer(); t.start(); ...; t.stop(); t.ms   # milliseconds of the last interval
"""
import logging
import tempfile
import time

import torch

_log = logging.getLogger("caffe")

# glog's severities, index = FLAGS_minloglevel.
_MIN_LEVELS = (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


def init_log(level=0, stderr=True):
    """BVLC's caffe.init_log([level[, stderr]]): start glog-style logging of caffe's logger.

    `level` is glog's minloglevel (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL). With stderr False
    the lines go to a glog-named file in the temp folder, where glog writes by default.
    """
    from .tools.glog import GlogFormatter, log_to_stderr
    py_level = _MIN_LEVELS[min(max(int(level), 0), len(_MIN_LEVELS) - 1)]
    if stderr:
        log_to_stderr(py_level)
    else:
        from .solvers import dashboard
        dashboard.add_glog_file(tempfile.gettempdir(), GlogFormatter(), program="python")
        _log.setLevel(py_level)


def log(message):
    """BVLC's caffe.log(s): LOG(INFO) << s."""
    _log.info("%s", message)


def has_nccl():
    """Whether caffe.NCCL (multi-worker data parallelism) is available: BVLC answers whether
    it was built with NCCL; here it runs on torch.distributed (NCCL on GPUs, gloo on CPUs)."""
    return torch.distributed.is_available()


class Timer:
    """BVLC's caffe.Timer: start(), stop(), and ms, the last start-to-stop interval.

    Reading ms stops a running timer, as Caffe's Timer::MilliSeconds does; in GPU mode the
    device is synchronized first so queued kernels are counted.
    """

    def __init__(self):
        self._running = False
        self._has_run = False
        self._start = self._stop = 0.0

    @staticmethod
    def _now():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self):
        if not self._running:
            self._start = self._now()
            self._running = self._has_run = True

    def stop(self):
        if self._running:
            self._stop = self._now()
            self._running = False

    @property
    def ms(self):
        if not self._has_run:
            _log.warning("Timer has never been run before reading time.")
            return 0.0
        self.stop()
        return (self._stop - self._start) * 1000.0

    @property
    def seconds(self):
        return self.ms / 1000.0

    running = property(lambda self: self._running)
