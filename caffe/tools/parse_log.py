"""Turn a Caffe training log into two tables, as BVLC's tools/extra/parse_log.py does.

    parse_log caffe.log OUTPUT_DIR [--delimiter ,] [--verbose]

writes OUTPUT_DIR/caffe.log.train and OUTPUT_DIR/caffe.log.test: one row per displayed
(train) or tested (test) iteration, columns NumIters, Seconds, LearningRate, then one
column per net output (loss, accuracy, ...). Seconds count from the "Solving" line.
Works on logs written by BVLC Caffe and by this project (same glog line format).
"""
import argparse
import csv
import datetime
import io
import math
import os
import re
import sys

from ..formats import atomic_write

# BVLC's patterns, anchored at the start of the glog message (after the optional
# "I1207 10:00:00.000000 123 solver.cpp:218] " prefix): BVLC's searched the whole line, so a
# layer or blob name that quotes one ("x Train net output #0: y = 1", or a line the name
# carried before names were escaped) added values. A value it cannot read as a number
# ("nan") is no output, as in BVLC's.
_MESSAGE = r"^(?:[A-Za-z]\d+ +\d+:\d+:\d+\.\d+ +\d+ +[^\s\]]+\] )?\s*"
ITERATION = re.compile(_MESSAGE + r"(?:MultiStep Status: )?Iteration (\d+)")
TRAIN_OUTPUT = re.compile(_MESSAGE + r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
TEST_OUTPUT = re.compile(_MESSAGE + r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
LEARNING_RATE = re.compile(_MESSAGE + r"Iteration \d+, lr = "
                           r"([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
GLOG_TIME = re.compile(r"^[A-Za-z](\d\d)(\d+) (\d+):(\d+):(\d+)\.(\d+)(?:\s|$)")


def line_time(line, year):
    """The datetime of a glog line (glog omits the year), or None for other lines: those
    BVLC's extract_seconds cannot read (glog 0.6's year-prefixed lines among them)."""
    m = GLOG_TIME.match(line.strip())
    if not m:
        return None
    month, day, hour, minute, second, micro = (int(g) for g in m.groups())
    try:
        return datetime.datetime(year, month, day, hour, minute, second, micro)
    except ValueError:
        return None


def log_year(path):
    """The year the log file was created, as BVLC guesses it (the file's ctime)."""
    return datetime.datetime.fromtimestamp(os.path.getctime(path)).year


def parse_log(path, keep_unfinished=False):
    """(train_rows, test_rows): lists of dicts with NumIters, Seconds, LearningRate, outputs.

    As BVLC's: parsing starts after the "Solving" line (Seconds count from it); lines
    without a glog time are skipped; a row is kept once it has the first row's columns
    (or when the next iteration's outputs begin); an unfinished last row is dropped unless
    keep_unfinished (plot_training_log keeps it); NumIters is a float.
    """
    year = log_year(path)
    with open(path, errors="replace") as f:
        lines = f.readlines()
    start, first = None, len(lines)
    for k, line in enumerate(lines):
        if "Solving" in line:
            start, first = line_time(line, year), k + 1
            break
    if start is None:
        # No readable "Solving" line (BVLC stops here): count from the first timed line.
        start = next((t for t in (line_time(x, year) for x in lines) if t is not None), None)
        first = 0 if start is not None else len(lines)
    iteration, rate, last = -1.0, math.nan, start
    train, test = [], []
    pending = {"train": None, "test": None}
    for line in lines[first:]:
        m = ITERATION.search(line)
        if m:
            iteration = float(m.group(1))
        if iteration == -1:
            continue  # nothing is recorded before the first iteration
        when = line_time(line, year)
        if when is None:
            continue
        if when.month < last.month:  # the log ran into a new year
            year += 1
            when = when.replace(year=year)
        last = when
        seconds = (when - start).total_seconds()
        m = LEARNING_RATE.search(line)
        if m:
            rate = float(m.group(1))
        for kind, regex, rows in (("train", TRAIN_OUTPUT, train), ("test", TEST_OUTPUT, test)):
            pending[kind] = _add_output(regex, line, rows, pending[kind], iteration, seconds,
                                        rate)
    for kind, rows in (("train", train), ("test", test)):
        if keep_unfinished and pending[kind] is not None:
            rows.append(pending[kind])
        # The first rows come before any "lr =" line: they take the second row's rate.
        if len(rows) > 1:
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return train, test


def _add_output(regex, line, rows, row, iteration, seconds, rate):
    m = regex.search(line)
    if m:
        if row is None or row["NumIters"] != iteration:
            if row is not None:
                rows.append(row)
            row = {"NumIters": iteration, "Seconds": seconds, "LearningRate": rate}
        row[m.group(2)] = float(m.group(3))
    if row is not None and rows and len(row) == len(rows[0]):
        rows.append(row)  # as many columns as the first row: complete
        row = None
    return row


def save_csv_files(logfile_path, output_dir, train_rows, test_rows, delimiter=",",
                   verbose=False):
    """Write LOG.train and LOG.test into output_dir (a table without rows is not written);
    return the paths written."""
    base = os.path.basename(logfile_path)
    written = []
    for suffix, rows in ((".train", train_rows), (".test", test_rows)):
        path = os.path.join(output_dir, base + suffix)
        if not rows:
            if verbose:
                print(f"Not writing {path}; no lines to write")
            continue
        atomic_write(path, csv_bytes(rows, delimiter))
        written.append(path)
        if verbose:
            print(f"Wrote {path}")
    return written


def csv_bytes(rows, delimiter=","):
    """The table as BVLC writes it: the excel dialect (CRLF), floats as Python prints them,
    the first row's columns first (and any a later row adds, where BVLC would stop)."""
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [c for c in row if c not in columns]
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=columns, dialect="excel", delimiter=delimiter)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def main(argv=None):
    p = argparse.ArgumentParser(prog="parse_log", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("logfile_path", help="path to the log file")
    p.add_argument("output_dir", help="directory in which to place the output CSV files")
    p.add_argument("--verbose", action="store_true", help="print some extra info")
    p.add_argument("--delimiter", default=",", help="column delimiter (default ',')")
    args = p.parse_args(argv)
    if not os.path.isfile(args.logfile_path):
        print(f"parse_log: {args.logfile_path}: no such file", file=sys.stderr)
        return 1
    if not os.path.isdir(args.output_dir):
        print(f"parse_log: {args.output_dir}: not a directory", file=sys.stderr)
        return 1
    train, test = parse_log(args.logfile_path)
    save_csv_files(args.logfile_path, args.output_dir, train, test, args.delimiter,
                   args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
