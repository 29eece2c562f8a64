"""`caffe vis` on CaffeNet with random weights: the PNGs exist and are not blank."""
import numpy as np
from PIL import Image

from caffe.tools.caffe import main
from tests.conftest import shared_path


def _image(path):
    """A 256 x 256 picture with structure: a bright disc on a gradient, stripes inside."""
    y, x = np.mgrid[:256, :256]
    rgb = np.stack([x, y, 255 - x], axis=-1).astype(np.float64)
    disc = (x - 128) ** 2 + (y - 110) ** 2 < 70 ** 2
    rgb[disc] = 200 + 55 * ((x[disc] // 8) % 2)[:, None]
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


def test_caffe_vis_writes_filter_and_activation_pngs(tmp_path, capsys):
    model = shared_path("models", "bvlc_reference_caffenet.prototxt")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"n{i:08d} class number {i}\n" for i in range(1000)))
    out = tmp_path / "out"
    assert main(["vis", "-model", str(model), "-image", _image(str(tmp_path / "in.png")),
                 "-blobs", "conv1,pool5", "-mean", "104,117,123", "-labels", str(labels),
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Xavier-random weights for conv1" in printed
    assert printed.count('"n0') == 5                                   # the top-5 lines
    names = sorted(p.name for p in out.iterdir())
    assert names == ["conv1.png", "conv1_filters.png", "conv1_hist.png",
                     "conv1_weights_hist.png", "pool5.png", "pool5_hist.png", "top_k.png"]
    filters = np.asarray(Image.open(out / "conv1_filters.png"))
    assert filters.ndim == 3 and filters.std() > 30                  # 96 colour 11 x 11 tiles
    pool5 = np.asarray(Image.open(out / "pool5.png"))
    assert pool5.ndim == 2 and pool5.std() > 30                      # 256 grey 6 x 6 maps
    # 16 x 16 tiles of 6 + 1 pixels, less the last padding, enlarged to at least 512 pixels.
    assert pool5.shape[0] % (16 * 7 - 1) == 0 and pool5.shape[0] >= 512


def test_caffe_vis_errors_are_clear(tmp_path, capsys):
    model = shared_path("models", "bvlc_reference_caffenet.prototxt")
    assert main(["vis", "-model", str(model), "-blobs", "pool5", "-o", str(tmp_path)]) == 1
    assert "give -image" in capsys.readouterr().err
    assert main(["vis", "-model", str(model), "-blobs", "nope", "-o", str(tmp_path)]) == 1
    assert "no layer or blob named 'nope'" in capsys.readouterr().err
