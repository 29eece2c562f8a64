"""DataTransformer against hand-computed results: crop, mirror, mean (file or values), scale."""
import numpy as np
import pytest

from caffe import formats
from caffe.data import DataError, DataTransformer, load_mean
from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from tests.conftest import shared_path

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
IMAGE = np.arange(9, dtype=np.uint8).reshape(1, 3, 3)    # [[0 1 2] [3 4 5] [6 7 8]]


def transformer(text, phase=TEST, seed=0, dtype=np.float64):
    param = parse_text(text, caffe_pb2.TransformationParameter())
    return DataTransformer(param, phase, seed=seed, dtype=dtype)


def write_mean(path, mean):
    blob = caffe_pb2.BlobProto(num=1, channels=mean.shape[0], height=mean.shape[1],
                               width=mean.shape[2], data=mean.ravel().tolist())
    formats.write_binary_proto(path, blob)
    return path


def test_identity_and_scale():
    out = transformer("scale: 0.5")(IMAGE[None])
    np.testing.assert_array_equal(out[0, 0], [[0, 0.5, 1], [1.5, 2, 2.5], [3, 3.5, 4]])
    assert out.dtype == np.float64


def test_test_phase_crops_the_centre():
    image = np.arange(20, dtype=np.uint8).reshape(1, 4, 5)
    out = transformer("crop_size: 2")(image[None])
    # offsets ((4 - 2) // 2, (5 - 2) // 2) = (1, 1)
    np.testing.assert_array_equal(out[0, 0], [[6, 7], [11, 12]])


def test_mean_file_is_cropped_at_the_image_offset_then_scaled(tmp_path):
    mean = write_mean(tmp_path / "m.binaryproto", 10 * np.arange(9, dtype=np.float32)
                      .reshape(1, 3, 3))
    out = transformer(f'crop_size: 2 scale: 0.5 mean_file: "{mean}"')(IMAGE[None])
    # crop at (0, 0): x = [[0 1] [3 4]], mean = [[0 10] [30 40]]; (x - mean) * 0.5
    np.testing.assert_array_equal(out[0, 0], [[0, -4.5], [-13.5, -18]])


def test_mirror_flips_image_and_mean_together(tmp_path):
    mean = write_mean(tmp_path / "m.binaryproto", 10 * np.arange(9, dtype=np.float32)
                      .reshape(1, 3, 3))
    t = transformer(f'mirror: true mean_file: "{mean}"', seed=7)
    rng = np.random.default_rng(7)
    expected_flips = [bool(rng.integers(2)) for _ in range(8)]
    out = t(np.repeat(IMAGE[None], 8, axis=0))
    assert any(expected_flips) and not all(expected_flips)
    plain = IMAGE[0].astype(float) - 10 * IMAGE[0]            # -9 x, every pixel its own mean
    for item, flip in zip(out, expected_flips):
        np.testing.assert_array_equal(item[0], plain[:, ::-1] if flip else plain)


def test_train_random_crop_and_mirror_follow_the_documented_draws():
    image = np.arange(2 * 5 * 6, dtype=np.uint8).reshape(2, 5, 6)
    t = transformer("crop_size: 3 mirror: true", TRAIN, seed=11)
    out = t(np.stack([image] * 6))
    rng = np.random.default_rng(11)
    for item in out:
        flip = bool(rng.integers(2))
        top, left = int(rng.integers(5 - 3 + 1)), int(rng.integers(6 - 3 + 1))
        expected = image[:, top:top + 3, left:left + 3]
        np.testing.assert_array_equal(item, expected[:, :, ::-1] if flip else expected)


def test_random_crop_only_in_train():
    image = np.arange(64, dtype=np.uint8).reshape(1, 8, 8)
    test = transformer("crop_size: 4", TEST)(np.stack([image] * 5))
    assert all((item == image[:, 2:6, 2:6]).all() for item in test)
    train = transformer("crop_size: 4", TRAIN, seed=3)(np.stack([image] * 20))
    assert len({item.tobytes() for item in train}) > 1


def test_mean_values_single_and_per_channel():
    image = np.stack([np.full((2, 2), 10, np.uint8), np.full((2, 2), 20, np.uint8)])
    one = transformer("mean_value: 4 scale: 2")(image[None])
    np.testing.assert_array_equal(one[0, :, 0, 0], [12, 32])
    per = transformer("mean_value: 1 mean_value: 2")(image[None])
    np.testing.assert_array_equal(per[0, :, 0, 0], [9, 18])


def test_images_of_different_sizes_with_a_crop():
    images = [np.zeros((1, 5, 5), np.uint8), np.ones((1, 4, 7), np.uint8)]
    out = transformer("crop_size: 3")(images)
    assert out.shape == (2, 1, 3, 3) and out[1].min() == 1
    with pytest.raises(DataError, match="without crop_size a batch needs equal sizes"):
        transformer("")(images, names=["a", "b"])


def test_float32_matches_caffes_arithmetic():
    image = np.array([[[200]]], dtype=np.uint8)
    out = transformer("mean_value: 0.1 scale: 0.017", dtype=np.float32)(image[None])
    assert out.dtype == np.float32
    assert out[0, 0, 0, 0] == (np.float32(200) - np.float32(0.1)) * np.float32(0.017)


# -- bad settings --------------------------------------------------------------------------------
def test_mean_that_does_not_fit(tmp_path):
    small = write_mean(tmp_path / "small.binaryproto", np.zeros((1, 2, 2), np.float32))
    t = transformer(f'crop_size: 2 mean_file: "{small}"')
    with pytest.raises(DataError, match="image 0 is 1x3x3 .* mean_file is 1x2x2; the mean must "
                                        "have the full image size"):
        t(IMAGE[None])
    with pytest.raises(DataError, match="1 mean_value or one per channel \\(1\\), not 2"):
        transformer("mean_value: 1 mean_value: 2")(IMAGE[None])


def test_inconsistent_settings():
    with pytest.raises(DataError, match="either mean_file or mean_value"):
        transformer('mean_file: "m" mean_value: 1')
    with pytest.raises(DataError, match="either force_color or force_gray"):
        transformer("force_color: true force_gray: true")
    with pytest.raises(DataError, match="image 0 is 3x3, smaller than crop_size 4"):
        transformer("crop_size: 4")(IMAGE[None])


def test_reference_mean_files_load():
    mean = load_mean(shared_path("golden", "formats", "ResNet_mean.binaryproto"))
    assert mean.shape == (3, 224, 224) and mean.dtype == np.float32
    assert 50 < mean.mean() < 150
    small = load_mean(shared_path("golden", "formats", "small_mean.binaryproto"))
    assert small.shape == (1, 28, 28)
