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


def log_to_stderr(level=logging.INFO):
    """Send caffe's log to stderr in glog's format (once per process)."""
    logger = logging.getLogger("caffe")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(GlogFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger
