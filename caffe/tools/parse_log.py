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
import math
import os
import re
import sys

ITERATION = re.compile(r"Iteration (\d+)")
TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+|nan|inf|-inf)")
TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+|nan|inf|-inf)")
LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
GLOG_TIME = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d+)")


def line_time(line, year):
    """The datetime of a glog line (glog omits the year), or None for other lines."""
    m = GLOG_TIME.match(line.strip())
    if not m:
        return None
    month, day, hour, minute, second = (int(g) for g in m.groups()[:5])
    micro = int(m.group(6).ljust(6, "0")[:6])
    return datetime.datetime(year, month, day, hour, minute, second, micro)


def log_year(path):
    return datetime.datetime.fromtimestamp(os.path.getmtime(path)).year


def parse_log(path):
    """(train_rows, test_rows): lists of dicts with NumIters, Seconds, LearningRate, outputs."""
    year = log_year(path)
    with open(path, errors="replace") as f:
        lines = f.readlines()
    start = None
    for line in lines:
        if "Solving" in line:
            start = line_time(line, year)
            if start is not None:
                break
    if start is None:
        start = next((t for t in (line_time(x, year) for x in lines) if t is not None), None)
    iteration, rate, seconds = -1, math.nan, 0.0
    train, test = [], []
    pending = {"train": None, "test": None}
    for line in lines:
        m = ITERATION.search(line)
        if m:
            iteration = int(m.group(1))
        if iteration == -1:
            continue  # nothing is recorded before the first iteration
        when = line_time(line, year)
        if when is not None and start is not None:
            if when < start:  # the log ran over a new year
                when = when.replace(year=when.year + 1)
            seconds = (when - start).total_seconds()
        m = LEARNING_RATE.search(line)
        if m:
            rate = float(m.group(1))
        for kind, regex, rows in (("train", TRAIN_OUTPUT, train), ("test", TEST_OUTPUT, test)):
            pending[kind] = _add_output(regex, line, rows, pending[kind], iteration, seconds,
                                        rate)
    for kind, rows in (("train", train), ("test", test)):
        if pending[kind] is not None:
            rows.append(pending[kind])
        # The first rows come before any "lr =" line: borrow the next row's rate.
        if len(rows) > 1 and math.isnan(rows[0]["LearningRate"]):
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return train, test


def _add_output(regex, line, rows, row, iteration, seconds, rate):
    m = regex.search(line)
    if m:
        if row is not None and row["NumIters"] != iteration:
            rows.append(row)
            row = None
        if row is None:
            row = {"NumIters": iteration, "Seconds": seconds, "LearningRate": rate}
        row[m.group(2)] = float(m.group(3))
    if row is not None and rows and len(row) == len(rows[0]):
        rows.append(row)  # as many columns as the first row: complete
        row = None
    return row


def save_csv_files(logfile_path, output_dir, train_rows, test_rows, delimiter=",",
                   verbose=False):
    base = os.path.basename(logfile_path)
    written = []
    for suffix, rows in ((".train", train_rows), (".test", test_rows)):
        path = os.path.join(output_dir, base + suffix)
        _write_csv(path, rows, delimiter)
        written.append(path)
        if verbose:
            print(f"Wrote {path}")
    return written


def _write_csv(path, rows, delimiter):
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


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
