"""ImageData: images named by a list file."""
import numpy as np
import pytest
from PIL import Image

import caffe
from caffe.data import DataError
from caffe.data.image import resize_linear
from caffe.errors import LayerSetupError
from tests.layers.data.util import make_net


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = {}
    for i in range(6):
        rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp_path / f"im{i}.png")
        images[f"im{i}.png"] = rgb
    (tmp_path / "list.txt").write_text("".join(f"im{i}.png {10 + i}\n" for i in range(6)))
    return tmp_path, images


def image_net(folder, params="", transform="", batch=2):
    return make_net(f"""layer {{ name: "im" type: "ImageData" top: "data" top: "label"
        image_data_param {{ source: "{folder / 'list.txt'}" root_folder: "{folder}/"
                            batch_size: {batch} {params} }}
        transform_param {{ {transform} }} }}""")


def test_image_data_reads_bgr_in_list_order(image_folder):
    folder, images = image_folder
    net = image_net(folder, batch=4)
    out = [{k: v.copy() for k, v in net.forward().items()} for _ in range(2)]
    data = np.concatenate([o["data"] for o in out])
    labels = np.concatenate([o["label"] for o in out])
    assert list(labels) == [10, 11, 12, 13, 14, 15, 10, 11]
    np.testing.assert_array_equal(data[1], images["im1.png"][:, :, ::-1].transpose(2, 0, 1))
    np.testing.assert_array_equal(data[6], images["im0.png"][:, :, ::-1].transpose(2, 0, 1))


def test_image_data_grey_and_resize(image_folder):
    folder, images = image_folder
    net = image_net(folder, "is_color: false new_height: 5 new_width: 4", batch=1)
    data = net.forward()["data"]
    rgb = images["im0.png"].astype(np.int64)
    grey = ((rgb[..., 0] * 4899 + rgb[..., 1] * 9617 + rgb[..., 2] * 1868 + 8192) >> 14)
    expected = resize_linear(grey.astype(np.uint8)[:, :, None], 5, 4)[:, :, 0]
    assert data.shape == (1, 1, 5, 4)
    np.testing.assert_array_equal(data[0, 0], expected)


def test_image_data_shuffle_is_reproducible_for_a_seed(image_folder):
    folder, _ = image_folder

    def labels(seed):
        caffe.set_random_seed(seed)
        net = image_net(folder, "shuffle: true", batch=6)
        return [list(net.forward()["label"].copy()) for _ in range(2)]

    a, b, c = labels(1), labels(1), labels(2)
    assert a == b and a != c
    assert sorted(a[0]) == sorted(a[1]) == list(range(10, 16))   # each epoch is a permutation


def test_image_data_bad_input(image_folder):
    folder, _ = image_folder
    (folder / "list.txt").write_text("im0.png 1\nim1.png\n")
    with pytest.raises(LayerSetupError, match="list.txt line 2: 'im1.png' is not 'path label'"):
        image_net(folder)
    (folder / "list.txt").write_text("im0.png 1\nmissing.png 2\n")
    net = image_net(folder, batch=1)
    net.forward()
    with pytest.raises(DataError, match="missing.png"):
        net.forward()
