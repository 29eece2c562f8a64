"""WindowData: R-CNN windows."""
import numpy as np
import pytest
from PIL import Image

from caffe.data.image import resize_linear
from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2
from tests.layers.data.util import make_net


def test_window_data_samples_background_then_foreground(tmp_path, device):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "img.png")
    (tmp_path / "windows.txt").write_text(
        "# 0\nimg.png\n3\n30\n40\n3\n"
        "3 0.9 5 4 20 18\n"      # foreground, class 3
        "2 0.3 0 0 9 9\n"        # between the thresholds: neither
        "1 0.1 10 10 39 29\n")   # background: label forced to 0
    text = f"""layer {{ name: "w" type: "WindowData" top: "data" top: "label"
        window_data_param {{ source: "{tmp_path / 'windows.txt'}" root_folder: "{tmp_path}/"
          batch_size: 4 fg_threshold: 0.5 bg_threshold: 0.2 fg_fraction: 0.5 %s }}
        transform_param {{ crop_size: 8 mean_value: 10 mean_value: 20 mean_value: 30 }} }}"""
    out = make_net(text % "scale: 0.5", device=device).forward()
    assert out["data"].shape == (4, 3, 8, 8)
    assert list(out["label"]) == [0, 0, 3, 3]
    bgr = rgb[:, :, ::-1]
    mean = np.array([10, 20, 30]).reshape(3, 1, 1)
    fg = resize_linear(bgr[4:19, 5:21], 8, 8).transpose(2, 0, 1)
    bg = resize_linear(bgr[10:30, 10:40], 8, 8).transpose(2, 0, 1)
    np.testing.assert_array_equal(out["data"][3], (fg - mean) * 0.5)
    np.testing.assert_array_equal(out["data"][0], (bg - mean) * 0.5)
    padded = make_net(text % 'context_pad: 2 crop_mode: "square"').forward()
    assert padded["data"].shape == (4, 3, 8, 8)
    # The background window, squared and doubled, overhangs the image; the overhang stays 0.
    assert (padded["data"][0, :, 0, :] == 0).all() and (padded["data"][0, :, 2:6, 2:6] != 0).any()


def test_window_data_bad_input(tmp_path):
    (tmp_path / "windows.txt").write_text("# 0\nimg.png\n3\n30\n40\n1\n3 0.9 5 4 20 18\n")
    mean = caffe_pb2.BlobProto(num=1, channels=3, height=4, width=4, data=[0.0] * 48)
    (tmp_path / "mean.binaryproto").write_bytes(mean.SerializeToString())
    text = f"""layer {{ name: "w" type: "WindowData" top: "data" top: "label"
        window_data_param {{ source: "{tmp_path / 'windows.txt'}" batch_size: 2 %s }}
        transform_param {{ crop_size: 8 %s }} }}"""
    with pytest.raises(LayerSetupError, match="no background windows"):
        make_net(text % ("", ""))
    with pytest.raises(LayerSetupError, match="mean_file is 3x4x4 but windows are warped to 3x8x8"):
        make_net(text % ("fg_fraction: 1", f'mean_file: "{tmp_path / "mean.binaryproto"}"'))
    (tmp_path / "windows.txt").write_text("# 0\nimg.png\n3\n30\n")
    with pytest.raises(LayerSetupError, match="ends in the middle of an image size"):
        make_net(text % ("", ""))
