"""Plot training curves from Caffe logs or from the dashboards' CSV tables
(BVLC's tools/extra/plot_training_log.py.example, plus CSV input and an overview chart).

    plot_training_log CHART_TYPE OUTPUT.png SOURCE [SOURCE ...]

Chart types:
    0: Test accuracy  vs. Iters      1: Test accuracy  vs. Seconds
    2: Test loss      vs. Iters      3: Test loss      vs. Seconds
    4: Learning rate  vs. Iters      5: Learning rate  vs. Seconds
    6: Train loss     vs. Iters      7: Train loss     vs. Seconds
    all: the eight charts in one image, against iterations above and seconds below
A SOURCE is a Caffe log (BVLC's or ours), a CSV table (train.csv or test.csv from
`caffe train -log_dir`, or parse_log's LOG.train or LOG.test: the other table of the pair
is read from beside it) or a -log_dir folder. One line per source, labelled with its name.
"""
import csv
import math
import os
import sys

from .._optional import require
from .parse_log import parse_log

CHARTS = {
    0: ("test", "accuracy", "NumIters"), 1: ("test", "accuracy", "Seconds"),
    2: ("test", "loss", "NumIters"), 3: ("test", "loss", "Seconds"),
    4: ("train", "LearningRate", "NumIters"), 5: ("train", "LearningRate", "Seconds"),
    6: ("train", "loss", "NumIters"), 7: ("train", "loss", "Seconds"),
}
NAMES = {0: "Test accuracy", 2: "Test loss", 4: "Learning rate", 6: "Train loss"}
AXES = {"NumIters": "Iters", "Seconds": "Seconds"}
FIXED_COLUMNS = ("NumIters", "Seconds", "LearningRate")
# Table pairs: a CSV file names the other table of its run.
PAIRS = (("train.csv", "test.csv"), (".train", ".test"))


def chart_name(chart_type):
    return NAMES[chart_type - chart_type % 2]


def chart_title(chart_type):
    return f"{chart_name(chart_type)} vs. {AXES[CHARTS[chart_type][2]]}"


# -- reading -------------------------------------------------------------------------------------
def load_tables(source):
    """(train_rows, test_rows) of a Caffe log, a CSV table (and its pair) or a -log_dir folder;
    rows are dicts with NumIters, Seconds, LearningRate and one entry per net output."""
    if os.path.isdir(source):
        train, test = (os.path.join(source, n) for n in PAIRS[0])
        if os.path.isfile(train) or os.path.isfile(test):
            return _read_csv(train), _read_csv(test)
        log = os.path.join(source, "caffe.INFO")
        if os.path.isfile(log):
            return parse_log(log, keep_unfinished=True)
        raise ValueError(f"{source}: no train.csv, test.csv or caffe.INFO in this folder")
    if not _is_csv(source):
        return parse_log(source, keep_unfinished=True)
    folder, name = os.path.split(source)
    for train_name, test_name in PAIRS:
        for mine, other, is_train in ((train_name, test_name, True),
                                      (test_name, train_name, False)):
            if name.endswith(mine):
                pair = os.path.join(folder, name[:len(name) - len(mine)] + other)
                rows, others = _read_csv(source), _read_csv(pair)
                return (rows, others) if is_train else (others, rows)
    # A CSV of unknown name: a table with test-only columns is taken for the test table.
    rows = _read_csv(source)
    return ([], rows) if any("accuracy" in c.lower() for c in (rows[0] if rows else {})) \
        else (rows, [])


def _is_csv(path):
    with open(path, errors="replace") as f:
        return f.readline().startswith("NumIters")


def _read_csv(path):
    """The rows of a table, numbers as floats (an empty cell is NaN); [] when it is absent."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="", errors="replace") as f:
        header = f.readline()
        f.seek(0)
        # parse_log takes any delimiter: it is whatever follows the first column's name.
        delimiter = header[len("NumIters")] if len(header) > len("NumIters") and \
            header[len("NumIters")] not in "\r\n" else ","
        return [{k: _float(v) for k, v in row.items() if k is not None}
                for row in csv.DictReader(f, delimiter=delimiter)]


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _column(rows, column):
    """The table's column for a chart's quantity: the exact name first, then a net output
    whose name contains it, then any column that does (SmoothedLoss)."""
    names = list(rows[0]) if rows else []
    if column in FIXED_COLUMNS:
        return column if column in names else None
    matches = [n for n in names if column in n.lower() and n not in FIXED_COLUMNS]
    matches.sort(key=lambda n: (n.lower() != column, n == "SmoothedLoss"))
    return matches[0] if matches else None


def chart_series(chart_type, source):
    """(x, y) lists of one source for a chart type, NaN points left out."""
    table, column, x_axis = CHARTS[chart_type]
    train, test = load_tables(source)
    rows = train if table == "train" else test
    key = _column(rows, column)
    if key is None:
        raise ValueError(f"{source}: no {table} output named like '{column}'")
    points = [(r[x_axis], r[key]) for r in rows
              if key in r and not (math.isnan(r[x_axis]) or math.isnan(r[key]))]
    return [p[0] for p in points], [p[1] for p in points]


def standard_series(source):
    """{chart type: (x, y)} for every chart of CHARTS that the source has data for."""
    out = {}
    for chart_type in CHARTS:
        try:
            x, y = chart_series(chart_type, source)
        except ValueError:
            continue
        if x:
            out[chart_type] = (x, y)
    return out


# -- drawing -------------------------------------------------------------------------------------
def _pyplot():
    matplotlib = require("matplotlib", extra="plot", feature="plotting training logs")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _draw(ax, chart_type, lines):
    for label, (x, y) in lines:
        ax.plot(x, y, marker=".", label=label)
    ax.set_title(chart_title(chart_type))
    ax.set_xlabel(AXES[CHARTS[chart_type][2]])
    ax.set_ylabel(chart_name(chart_type))
    if lines:
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def plot_chart(chart_type, png_path, sources):
    plt = _pyplot()
    lines = [(os.path.basename(os.path.normpath(s)), chart_series(chart_type, s))
             for s in sources]
    fig, ax = plt.subplots()
    _draw(ax, chart_type, lines)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def plot_all(png_path, sources):
    """The eight charts in a 2 x 4 grid; returns {chart type: number of lines drawn}."""
    series = [(os.path.basename(os.path.normpath(s)), standard_series(s)) for s in sources]
    if not any(found for _, found in series):
        raise ValueError(f"no training curves found in {', '.join(sources)}")
    plt = _pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    drawn = {}
    for i, name_type in enumerate((6, 2, 0, 4)):   # a column per quantity
        for row, chart_type in enumerate((name_type, name_type + 1)):
            lines = [(label, found[chart_type]) for label, found in series if chart_type in found]
            _draw(axes[row][i], chart_type, lines)
            drawn[chart_type] = len(lines)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return drawn


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    valid = len(argv) >= 3 and (argv[0] == "all" or
                                (argv[0].isdigit() and int(argv[0]) in CHARTS))
    if not valid:
        print(__doc__, file=sys.stderr)
        return 1
    missing = [p for p in argv[2:] if not os.path.exists(p)]
    if missing:
        print(f"plot_training_log: no such log file: {', '.join(missing)}", file=sys.stderr)
        return 1
    try:
        if argv[0] == "all":
            plot_all(argv[1], argv[2:])
        else:
            plot_chart(int(argv[0]), argv[1], argv[2:])
    except (ValueError, OSError) as e:
        print(f"plot_training_log: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
