"""Training dashboards: what the solver displays and tests, as CSV tables and TensorBoard scalars.

    caffe train -solver solver.prototxt -log_dir runs/lenet
    caffe.solvers.dashboard.attach(solver, "runs/lenet")    # pycaffe, before solver.solve()

At every display and every test this writes
    DIR/train.csv    NumIters, Seconds, LearningRate, one column per train net output, SmoothedLoss
    DIR/test.csv     NumIters, Seconds, LearningRate, one column per test net output
                     (test net #i, i > 0, goes to DIR/test_<i>.csv)
    DIR/events.out.tfevents.*   the same numbers as TensorBoard scalars (train/<output>,
                     train/learning_rate, train/smoothed_loss, test/<output>), when the
                     `tensorboard` package is installed (a warning says so when it is not)
The columns are named as parse_log names them, so plot_training_log (and BVLC's plotting
scripts) read these tables as they read parse_log's. Seconds count from attach(). An output
blob of several elements gets one column per element, <name>_<k>, where Caffe's log repeats
the name. The rate on a train row is the one this iteration's update used (Caffe logs it after
the outputs); on a test row it is the rate of the last update before the test, empty before
the first one. Each row is flushed at once, so a crashed run keeps its curves; a resumed run
keeps the rows of the earlier run from before the iteration it resumes at.

Logging never changes a run's outcome: a log folder that cannot be created or written (a full
disk, a read-only mount) is reported once, as a warning on stderr, and that output stops;
training, its snapshots and its exit status are those of a run without -log_dir, as with glog.

Any object with on_display(solver, outputs) and on_test(solver, test_net_id, scores) can be
given to Solver.add_logger; TrainingLog is the one behind -log_dir. Only the root solver
(worker 0) tests and displays, so only it logs. ProgressPostfix puts loss, lr and images/s
on the `caffe train` progress bar.
"""
import contextlib
import csv
import getpass
import logging
import math
import os
import socket
import sys
import threading
import time

from .. import _optional, parallel

log = logging.getLogger("caffe.dashboard")

FIXED_COLUMNS = ("NumIters", "Seconds", "LearningRate")
TAGS = {"LearningRate": "learning_rate", "SmoothedLoss": "smoothed_loss"}


def tensorboard_writer_class():
    """torch's SummaryWriter, or None when the tensorboard package (which it needs) is absent."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


def named_values(pairs):
    """[(name, value, ...)] -> {column: value}; a name met k > 1 times becomes name_0..name_k-1."""
    counts = {}
    for pair in pairs:
        counts[pair[0]] = counts.get(pair[0], 0) + 1
    seen, out = {}, {}
    for pair in pairs:
        name, value = pair[0], float(pair[1])
        if counts[name] > 1:
            seen[name] = seen.get(name, -1) + 1
            name = f"{name}_{seen[name]}"
        out[name] = value
    return out


class CsvTable:
    """One CSV file, a row per call to write(), flushed at once.

    The header comes from the first row. An existing file with the same header keeps the
    rows from before that first row's iteration (a resumed run); anything else is replaced.
    """

    def __init__(self, path):
        self.path, self.file, self.writer = path, None, None

    def write(self, row):
        if self.file is None:
            self._start(row)
        self.writer.writerow(row)
        self.file.flush()

    def _start(self, row):
        columns = list(row)
        kept = self._rows_before(columns, row["NumIters"])
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(kept)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)      # a full disk leaves no half-written table behind
            raise
        os.replace(tmp, self.path)  # the earlier run's rows are never half-written
        self.file = open(self.path, "a", newline="")
        # Outputs do not change during a run; ignoring strays keeps the table rectangular.
        self.writer = csv.DictWriter(self.file, fieldnames=columns, restval="",
                                     extrasaction="ignore")

    def _rows_before(self, columns, iteration):
        if iteration <= 0 or not os.path.isfile(self.path):
            return []
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != columns:
                return []
            return [r for r in reader if _number(r.get("NumIters")) < iteration]

    def close(self):
        if self.file is not None:
            file, self.file = self.file, None
            file.close()


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


class TrainingLog:
    """A solver logger writing train.csv, test*.csv and TensorBoard events into log_dir.

    tensorboard: None writes events when the package is installed (warning otherwise),
    True requires it, False writes CSV only.
    """

    def __init__(self, log_dir, tensorboard=None):
        self.log_dir = os.fspath(log_dir)
        self.failed = False     # set by the first write that fails: nothing more is written
        self.tables = {}
        self.updated = False    # whether solver.learning_rate is the rate of an update yet
        self.writer = None
        self.writer_class = None
        try:
            os.makedirs(self.log_dir, exist_ok=True)
        except OSError as e:
            self._give_up(e, "create")
        if tensorboard is not False:
            self.writer_class = tensorboard_writer_class()
            if self.writer_class is None:
                message = (f"TensorBoard output is unavailable: "
                           f"{_optional.message('tensorboard', 'tensorboard', 'TensorBoard logs')}"
                           f"; writing only the CSV files to {self.log_dir}")
                if tensorboard:
                    raise _optional.MissingDependency(message)
                log.warning("%s", message)
        self.start = time.perf_counter()    # after the import of tensorboard, which is slow

    def attach(self, solver):
        self.start = time.perf_counter()
        solver.add_logger(self)
        solver.add_callback(None, self._on_gradients_ready)
        return self

    # -- the solver's hooks ---------------------------------------------------------------
    def _on_gradients_ready(self):
        self.updated = True     # apply_update follows at once

    def on_display(self, solver, outputs):
        self.updated = True     # the display hook runs after the iteration's update
        row = self._row(solver)
        row.update(named_values(outputs))
        row["SmoothedLoss"] = float(solver.smoothed_loss)
        self._emit("train", row)

    def on_test(self, solver, test_net_id, scores):
        if not scores:
            return              # an interrupted test has nothing to show
        row = self._row(solver)
        row.update(named_values(scores))
        self._emit("test" if test_net_id == 0 else f"test_{test_net_id}", row)

    # -- output --------------------------------------------------------------------------
    def _row(self, solver):
        rate = float(solver.learning_rate) if self.updated else ""
        return {"NumIters": int(solver.iter),
                "Seconds": round(time.perf_counter() - self.start, 6), "LearningRate": rate}

    def _emit(self, name, row):
        if self.failed:
            return
        try:
            self._write(name, row)
        except OSError as e:
            self._give_up(e, "write")

    def _give_up(self, error, verb):
        """Report a log folder that cannot be written once, and stop writing it: the run's
        outcome must not depend on its logs (a full disk once turned a finished training
        into exit status 1)."""
        self.failed = True
        log.warning("Cannot %s the training log in %s (%s); its tables and events stop "
                    "here, training goes on", verb, self.log_dir, error)
        self._close_quietly()

    def _close_quietly(self):
        for table in self.tables.values():
            with contextlib.suppress(OSError):
                table.close()
        if self.writer is not None:
            writer, self.writer = self.writer, None
            with contextlib.suppress(OSError):
                writer.close()

    def _write(self, name, row):
        table = self.tables.get(name)
        if table is None:
            table = self.tables[name] = CsvTable(os.path.join(self.log_dir, name + ".csv"))
        table.write(row)
        writer = self._writer(row["NumIters"])
        if writer is None:
            return
        for key, value in row.items():
            if key in ("NumIters", "Seconds") or value == "" or \
                    (key == "LearningRate" and name != "train"):
                continue
            writer.add_scalar(f"{name}/{TAGS.get(key, key)}", value, global_step=row["NumIters"])
        writer.flush()

    def _writer(self, iteration):
        if self.writer is None and self.writer_class is not None:
            _quiet_event_writer_threads()
            # A resumed run replaces what an earlier run wrote from this iteration on.
            self.writer = self.writer_class(log_dir=self.log_dir,
                                            purge_step=iteration if iteration > 0 else None)
        return self.writer

    def close(self):
        try:
            for table in self.tables.values():
                table.close()
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        except OSError as e:    # the last rows' flush met a full disk
            if not self.failed:
                self._give_up(e, "write")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _quiet_event_writer_threads():
    """TensorBoard writes events from a thread of its own; a write that fails there (a full
    disk) ends the thread with a traceback on stderr, then is raised again to our next flush,
    which reports it once (_give_up). This hook drops that thread's traceback of an OSError,
    and passes everything else to the hook it replaces. Installed once per process."""
    global _previous_excepthook
    if _previous_excepthook is not None:
        return
    _previous_excepthook = threading.excepthook

    def hook(args):
        if isinstance(args.exc_value, OSError) and \
                type(args.thread).__name__ == "_AsyncWriterThread":
            return
        _previous_excepthook(args)
    threading.excepthook = hook


_previous_excepthook = None


def attach(solver, log_dir, tensorboard=None):
    """Log `solver`'s displays and tests to log_dir (see the module); returns the TrainingLog,
    or None on a worker other than the root. Call its close() when done (or use `with`)."""
    if not parallel.is_root():
        return None
    return TrainingLog(log_dir, tensorboard).attach(solver)


@contextlib.contextmanager
def logging_to(solver, log_dir):
    """attach() for the length of a `with` block; nothing when log_dir is empty."""
    dashboard = attach(solver, log_dir) if log_dir else None
    try:
        yield dashboard
    finally:
        if dashboard is not None:
            dashboard.close()


# -- glog's own -log_dir: the text log as files ------------------------------------------------
class GlogFileHandler(logging.FileHandler):
    """The log file under -log_dir. A write that fails (a full disk, an I/O error) is reported
    once on stderr and ends this file; the run goes on. logging's own handler would print a
    traceback for every later record and the closing flush would fail the run."""

    failed = False

    def emit(self, record):
        if not self.failed:
            super().emit(record)

    def handleError(self, record):
        if self.failed:
            return
        self.failed = True
        error = sys.exc_info()[1]
        self._drop_stream()
        # Through the logger, so stderr shows it in glog's format; this handler skips it.
        log.warning("Cannot write the log file %s (%s); the log continues on stderr only",
                    self.baseFilename, error)

    def _drop_stream(self):
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()      # its buffer cannot be written either: dropped

    def flush(self):
        if not self.failed:
            try:
                super().flush()
            except OSError:
                self.handleError(None)

    def close(self):
        try:
            super().close()
        except OSError:             # the final flush of buffered lines
            self.handleError(None)
            self._drop_stream()
            logging.Handler.close(self)


def add_glog_file(log_dir, formatter, program="caffe"):
    """Also write caffe's log into log_dir as glog does with -log_dir: a file named
    <program>.<host>.<user>.log.INFO.<date>-<time>.<pid> and the link <program>.INFO to it.
    Returns the handler (remove_glog_file takes it off), or None when the folder or file
    cannot be created: a warning says so and the run goes on, logging to stderr, as glog's."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "invalid-user"
    name = (f"{program}.{socket.gethostname()}.{user}.log.INFO."
            f"{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}")
    try:
        os.makedirs(log_dir, exist_ok=True)
        handler = GlogFileHandler(os.path.join(log_dir, name))
    except OSError as e:
        log.warning("Cannot create the log file %s in %s (%s); logging to stderr only",
                    name, log_dir, e)
        return None
    handler.setFormatter(formatter)
    logging.getLogger("caffe").addHandler(handler)
    link = os.path.join(log_dir, f"{program}.INFO")
    with contextlib.suppress(OSError):  # a file system without links still gets the log
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(name, link)
    return handler


def remove_glog_file(handler):
    if handler is not None:
        logging.getLogger("caffe").removeHandler(handler)
        handler.close()


# -- the progress bar ---------------------------------------------------------------------------
def images_per_iteration(solver):
    """Images one iteration trains on, all workers together; None when the net has no data
    layer (a layer without bottoms) whose first top has a batch axis."""
    net = solver.net
    for bottoms, tops in zip(net.bottom_vecs, net.top_vecs):
        if not bottoms and tops:
            shape = tops[0].shape
            if shape:
                return shape[0] * solver.param.iter_size * parallel.solver_count()
            return None
    return None


class ProgressPostfix:
    """A solver callback (on_gradients_ready) that steps a tqdm bar and shows the smoothed
    loss, the learning rate and the images per second on it, at most every `interval` s."""

    def __init__(self, solver, bar, interval=0.5):
        self.solver, self.bar, self.interval = solver, bar, interval
        self.images = images_per_iteration(solver)
        self.since, self.steps, self.calls = time.perf_counter(), 0, 0

    def __call__(self):
        self.steps += 1
        self.calls += 1
        now = time.perf_counter()
        solver = self.solver
        last = solver.iter + 1 >= solver.param.max_iter
        if now - self.since >= self.interval or last:
            self.bar.set_postfix_str(self.postfix(now - self.since), refresh=False)
            self.since, self.steps = now, 0
        self.bar.update(1)

    def postfix(self, seconds):
        solver = self.solver
        parts = [f"loss={solver.smoothed_loss:.4g}"]
        if self.calls > 1:      # called before the update: the rate is known from the 2nd on
            parts.append(f"lr={solver.learning_rate:.4g}")
        if self.images is not None and seconds > 0:
            parts.append(f"images/s={self.steps * self.images / seconds:.4g}")
        return ", ".join(parts)
