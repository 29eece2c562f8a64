"""glog's log format for caffe's logging: `I1122 02:00:00.000000 12345 solver.py:218] message`.

The `caffe` command and the data tools log to stderr this way, so BVLC's log tools (and
parse_log) read their logs.
"""
import datetime
import logging
import sys
import threading


class GlogFormatter(logging.Formatter):
    """I1122 02:00:00.000000 12345 solver.py:218] message  (glog's line prefix)."""

    LEVELS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
              logging.CRITICAL: "F"}

    def format(self, record):
        when = datetime.datetime.fromtimestamp(record.created)
        level = self.LEVELS.get(record.levelno, "I")
        thread = threading.get_native_id()
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return (f"{level}{when:%m%d %H:%M:%S.%f} {thread:>5} {record.filename}:{record.lineno}] "
                f"{message}")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test harnesses swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def log_to_stderr(level=logging.INFO, threshold=logging.NOTSET, prefix=True):
    """Send caffe's log to stderr in glog's format (one handler per process).

    ``level``: what is logged at all (glog's -minloglevel); ``threshold``: what of it reaches
    stderr (-stderrthreshold when neither -logtostderr nor -alsologtostderr); ``prefix``:
    glog's line prefix (-log_prefix).
    """
    logger = logging.getLogger("caffe")
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        logger.addHandler(handler)
    handler.setFormatter(GlogFormatter() if prefix else logging.Formatter("%(message)s"))
    handler.setLevel(threshold)
    logger.setLevel(level)
    return logger
