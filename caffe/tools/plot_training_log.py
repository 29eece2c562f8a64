"""Plot training curves from Caffe logs (BVLC's tools/extra/plot_training_log.py.example).

    plot_training_log CHART_TYPE OUTPUT.png LOG [LOG ...]

Chart types:
    0: Test accuracy  vs. Iters      1: Test accuracy  vs. Seconds
    2: Test loss      vs. Iters      3: Test loss      vs. Seconds
    4: Learning rate  vs. Iters      5: Learning rate  vs. Seconds
    6: Train loss     vs. Iters      7: Train loss     vs. Seconds
One line per log file, labelled with the file's name.
"""
import os
import sys

from .parse_log import parse_log

CHARTS = {
    0: ("test", "accuracy", "NumIters"), 1: ("test", "accuracy", "Seconds"),
    2: ("test", "loss", "NumIters"), 3: ("test", "loss", "Seconds"),
    4: ("train", "LearningRate", "NumIters"), 5: ("train", "LearningRate", "Seconds"),
    6: ("train", "loss", "NumIters"), 7: ("train", "loss", "Seconds"),
}
LABELS = {"accuracy": "Test accuracy", "loss": "loss", "LearningRate": "Learning rate",
          "NumIters": "Iters", "Seconds": "Seconds"}


def chart_series(chart_type, log_path):
    """(x, y) lists of one log for a chart type; the y column is matched by name."""
    table, column, x_axis = CHARTS[chart_type]
    train, test = parse_log(log_path)
    rows = train if table == "train" else test
    if column in ("LearningRate",):
        key = column
    else:
        names = [c for c in (rows[0] if rows else {}) if column in c.lower()]
        if not names:
            raise ValueError(f"{log_path}: no {table} output named like '{column}'")
        key = names[0]
    points = [(r[x_axis], r[key]) for r in rows if key in r]
    return [p[0] for p in points], [p[1] for p in points]


def plot_chart(chart_type, png_path, log_paths):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    table, column, x_axis = CHARTS[chart_type]
    fig, ax = plt.subplots()
    for path in log_paths:
        x, y = chart_series(chart_type, path)
        ax.plot(x, y, marker=".", label=os.path.basename(path))
    title = f"{table.capitalize()} {LABELS.get(column, column)} vs. {LABELS[x_axis]}"
    ax.set_title(title)
    ax.set_xlabel(LABELS[x_axis])
    ax.set_ylabel(LABELS.get(column, column))
    ax.legend(loc="best")
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) < 3 or not argv[0].isdigit() or int(argv[0]) not in CHARTS:
        print(__doc__, file=sys.stderr)
        return 1
    missing = [p for p in argv[2:] if not os.path.isfile(p)]
    if missing:
        print(f"plot_training_log: no such log file: {', '.join(missing)}", file=sys.stderr)
        return 1
    try:
        plot_chart(int(argv[0]), argv[1], argv[2:])
    except ValueError as e:
        print(f"plot_training_log: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
