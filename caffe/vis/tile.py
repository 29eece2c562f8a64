"""Filters and activations tiled into one image: the notebooks' vis_square, as a library.

Caffe's notebooks copy a `vis_square` that normalises an (n, h, w[, 3]) array, pads every
tile and lays the tiles out on a square grid; the functions here do that, with the choice of
normalising each tile on its own (every filter uses the full grey range: shapes stand out)
or all tiles together (relative magnitudes stay comparable).
"""
import math

import numpy as np

from ..errors import CaffeError

NORMALIZE = ("tile", "global", "none")


def _normalize(data, normalize):
    data = np.asarray(data, dtype=np.float64)
    if normalize == "none":
        return data
    if normalize == "global":
        axes = tuple(range(data.ndim))
    elif normalize == "tile":
        axes = tuple(range(1, data.ndim))
    else:
        raise CaffeError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    low = data.min(axis=axes, keepdims=True)
    span = data.max(axis=axes, keepdims=True) - low
    # A constant tile (a dead filter, an all-zero map) shows as black, not as NaNs.
    return np.where(span > 0, (data - low) / np.where(span > 0, span, 1), 0.0)


def vis_square(data, padsize=1, padval=1.0, normalize="tile"):
    """Tile an (n, h, w) or (n, h, w, 3) array into a square grid, values scaled to [0, 1].

    Tiles are separated by `padsize` pixels of `padval` (in the [0, 1] output range); the
    grid is ceil(sqrt(n)) tiles on a side, left to right then top to bottom.
    """
    data = np.asarray(data)
    if data.ndim not in (3, 4) or (data.ndim == 4 and data.shape[3] != 3):
        raise CaffeError(f"vis_square takes (n, h, w) or (n, h, w, 3) arrays, got shape "
                         f"{data.shape}")
    if len(data) == 0:
        raise CaffeError("vis_square: nothing to tile (0 items)")
    data = _normalize(data, normalize)
    n = int(math.ceil(math.sqrt(len(data))))
    padding = ((0, n * n - len(data)), (0, padsize), (0, padsize)) + \
        ((0, 0),) * (data.ndim - 3)
    data = np.pad(data, padding, mode="constant", constant_values=padval)
    h, w = data.shape[1:3]
    grid = data.reshape((n, n) + data.shape[1:]).swapaxes(1, 2)
    grid = grid.reshape((n * h, n * w) + data.shape[3:])
    return grid[:n * h - padsize, :n * w - padsize] if padsize else grid


def filters_grid(weights, normalize="tile", bgr=True, padsize=1):
    """A Convolution layer's (out, in, kh, kw) weights as one grid.

    Three input channels tile as colour filters (Caffe's BGR shown as RGB when bgr); any
    other count tiles each (out, in) kernel as a grey square, out x in of them.
    """
    weights = np.asarray(weights)
    if weights.ndim != 4:
        raise CaffeError(f"filters_grid takes (out, in, kh, kw) weights, got shape "
                         f"{weights.shape}")
    if weights.shape[1] == 3:
        tiles = weights.transpose(0, 2, 3, 1)
        if bgr:
            tiles = tiles[..., ::-1]
    else:
        tiles = weights.reshape((-1,) + weights.shape[2:])
    return vis_square(tiles, padsize=padsize, normalize=normalize)


def activations_grid(data, item=0, normalize="tile", padsize=1):
    """One item's (C, H, W) feature maps of an (N, C, H, W) blob as a grey grid."""
    data = np.asarray(data)
    if data.ndim < 3:
        raise CaffeError(f"activations_grid takes (N, C, H, W) blobs, got shape {data.shape}; "
                         f"plot vectors with caffe.vis.blob_histogram or plot_vector")
    maps = data[item].reshape((-1,) + data.shape[-2:]) if data.ndim >= 4 else data
    return vis_square(maps, padsize=padsize, normalize=normalize)


def to_image(grid, min_size=512, cmap="gray"):
    """A [0, 1] grid as a PIL image, enlarged by an integer factor (nearest) to min_size."""
    from PIL import Image
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim == 2 and cmap != "gray":
        import matplotlib
        grid = matplotlib.colormaps[cmap](grid)[..., :3]
    pixels = np.clip(np.round(grid * 255), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    factor = max(1, int(math.ceil(min_size / max(image.size))))
    if factor > 1:
        image = image.resize((image.size[0] * factor, image.size[1] * factor),
                             Image.Resampling.NEAREST)
    return image


def save_png(grid, path, min_size=512, cmap="gray"):
    """Write a [0, 1] grid as a PNG (atomically); returns the path."""
    import io as _io
    from ..formats import atomic_write
    buffer = _io.BytesIO()
    to_image(grid, min_size, cmap).save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())
    return path
