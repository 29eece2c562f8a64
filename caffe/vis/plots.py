"""Plots of a blob's values and of a classifier's top predictions (matplotlib, Agg)."""
import io as _io

import numpy as np

from ..errors import CaffeError
from ..formats import atomic_write


def _figure(width=6.4, height=4.0):
    from matplotlib.figure import Figure          # no pyplot: no GUI backend, no global state
    return Figure(figsize=(width, height), dpi=100)


def _save(fig, path):
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    atomic_write(path, buffer.getvalue())
    return path


def blob_histogram(data, path, bins=100, title=None, nonzero=False):
    """A histogram of a blob's values (nonzero: leave out exact zeros, as after ReLU)."""
    values = np.asarray(data, dtype=np.float64).ravel()
    if nonzero:
        values = values[values != 0]
    fig = _figure()
    ax = fig.add_subplot()
    if values.size:
        ax.hist(values, bins=bins, color="#3a6ea5")
    ax.set_title(title or "values")
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    text = (f"n={values.size}  mean={values.mean():.4g}  std={values.std():.4g}"
            if values.size else "no values")
    ax.text(0.99, 0.97, text, transform=ax.transAxes, ha="right", va="top", fontsize=8)
    return _save(fig, path)


def plot_vector(data, path, title=None):
    """A 1-D blob (an fc layer's output for one item) as a line, the notebooks' fc6 plot."""
    fig = _figure(8, 3)
    ax = fig.add_subplot()
    ax.plot(np.asarray(data, dtype=np.float64).ravel(), linewidth=0.8)
    ax.set_title(title or "values")
    ax.set_xlabel("unit")
    return _save(fig, path)


def load_labels(path):
    """Class names, one a line (synset_words.txt: 'n01440764 tench, Tinca tinca')."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise CaffeError(f"{path}: cannot read the labels file ({e.strerror})") from None


def top_k(probs, labels=None, k=5):
    """[(label, probability)] of the k highest scores of one item, best first."""
    probs = np.asarray(probs, dtype=np.float64).ravel()
    if labels is not None and len(labels) != probs.size:
        raise CaffeError(f"{len(labels)} labels for {probs.size} classes")
    order = np.argsort(-probs, kind="stable")[:k]
    return [((labels[i] if labels is not None else f"class {i}"), float(probs[i]))
            for i in order]


def plot_top_k(predictions, path, title="top predictions"):
    """A horizontal bar chart of top_k's [(label, probability)], best at the top."""
    if not predictions:
        raise CaffeError("plot_top_k: no predictions")
    fig = _figure(6.4, 0.45 * len(predictions) + 1)
    ax = fig.add_subplot()
    names = [name if len(name) <= 40 else name[:37] + "..." for name, _ in predictions]
    ax.barh(range(len(predictions))[::-1], [p for _, p in predictions], color="#3a6ea5")
    ax.set_yticks(range(len(predictions))[::-1], names)
    ax.set_xlabel("probability")
    ax.set_title(title)
    return _save(fig, path)
