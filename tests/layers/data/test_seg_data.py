"""ImageSegData (PSPNet) and DenseImageData (SegNet): image + label image lists."""
import numpy as np
import pytest
from PIL import Image

import caffe

NET = """layer {{ name: "d" type: "{kind}" top: "data" top: "label" {extra_top}
  transform_param {{ mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.5 {transform} }}
  {param} {{ source: "{source}" batch_size: 2 root_folder: "{root}/" {more} }} }}"""


@pytest.fixture
def listed(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i, (h, w) in enumerate([(5, 7), (6, 4)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 5, (h, w), dtype=np.uint8)).save(tmp_path / f"{i}_l.png")
        lines.append(f"{i}.png {i}_l.png")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def net(tmp_path, kind, phase=caffe.TEST, transform="", more="", extra_top=""):
    param = "image_data_param" if kind == "ImageSegData" else "dense_image_data_param"
    text = NET.format(kind=kind, source=tmp_path / "list.txt", root=tmp_path, param=param,
                      transform=transform, more=more, extra_top=extra_top)
    (tmp_path / "net.prototxt").write_text(text)
    return caffe.Net(str(tmp_path / "net.prototxt"), phase)


def image(tmp_path, name, color=True):
    img = np.asarray(Image.open(tmp_path / name), np.float64)
    return img[:, :, ::-1] if color else img     # BGR, as Caffe reads


def test_image_seg_data_pads_with_mean_and_ignore_then_centre_crops(listed):
    n = net(listed, "ImageSegData", transform="crop_size: 6",
            more="label_type: PIXEL ignore_label: 255", extra_top='top: "dim"')
    n.forward()
    data, label, dim = (n.blobs[k].data for k in ("data", "label", "dim"))
    assert data.shape == (2, 3, 6, 6) and label.shape == (2, 1, 6, 6)
    # image 0 (5 x 7): padded to 6 x 7 (one mean row, ignore row), centre crop x from 0
    img, seg = image(listed, "0.png"), image(listed, "0_l.png", False)
    expected = ((img - [10, 20, 30]) * 0.5).transpose(2, 0, 1)
    np.testing.assert_allclose(data[0, :, :5], expected[:, :, :6])
    np.testing.assert_allclose(data[0, :, 5], 0)
    np.testing.assert_array_equal(label[0, 0, :5], seg[:, :6])
    np.testing.assert_array_equal(label[0, 0, 5], 255)
    np.testing.assert_array_equal(dim[:, 0, 0], [[5, 6], [6, 4]])
    # image 1 (6 x 4): padded to 6 x 6 on the right
    np.testing.assert_array_equal(label[1, 0, :, 4:], 255)


def test_image_seg_data_train_crops_randomly_within_the_image(listed):
    n = net(listed, "ImageSegData", caffe.TRAIN, transform="crop_size: 4 mirror: true",
            more="label_type: PIXEL")
    n.forward()
    assert n.blobs["data"].data.shape == (2, 3, 4, 4)
    assert set(np.unique(n.blobs["label"].data)) <= set(range(5))


def test_dense_image_data_reads_pairs(listed):
    n = net(listed, "DenseImageData", caffe.TRAIN, more="new_height: 4 new_width: 4 shuffle: false")
    n.forward()
    assert n.blobs["data"].data.shape == (2, 3, 4, 4)
    assert n.blobs["label"].data.shape == (2, 1, 4, 4)
    seg = image(listed, "1_l.png", False)
    rows, cols = (np.arange(4) * 6 / 4).astype(int), (np.arange(4) * 4 / 4).astype(int)
    np.testing.assert_array_equal(n.blobs["label"].data[1, 0], seg[rows][:, cols])


def test_missing_list_is_a_named_error(tmp_path):
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "d" type: "DenseImageData" top: "a" top: "b" '
        f'dense_image_data_param {{ source: "{tmp_path}/none.txt" batch_size: 1 }} }}')
    with pytest.raises(caffe.errors.CaffeError, match="none.txt"):
        caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
