"""The one preprocessing definition: 8-bit mapping, CLAHE, resize, batching."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from asinfer.engine import Frame, InputError, Preprocessor, PreprocessSpec, read_frames, to_uint8

from conftest import dicom_file, rng_image


def test_uint8_passes_through():
    img = rng_image((10, 12))
    assert to_uint8(img) is img


def test_stretch_8bit_makes_a_part_range_export_look_like_its_source():
    """12-bit values shifted right by 4 (an 8-bit export without windowing) fill only 0..~100; with
    ``stretch_8bit`` the model sees nearly the image the 12-bit file gives, without it a dark one."""
    rng = np.random.default_rng(4)
    ramp = np.linspace(0, 1, 96, dtype=np.float32)[None, :] * np.ones((96, 1), np.float32)
    texture = cv2.GaussianBlur(rng.uniform(-1, 1, (96, 96)).astype(np.float32), (0, 0), 2)
    deep = ((ramp + texture) * 1400 + 300).clip(0, 4095).astype(np.uint16)
    deep[5, 5] = 4095  # a hot pixel the percentiles must ignore
    export = (deep >> 4).astype(np.uint8)
    spec = PreprocessSpec(stretch_8bit=True)
    reference = to_uint8(deep, spec).astype(int)
    stretched = to_uint8(export, spec).astype(int)
    assert np.abs(stretched - reference).mean() < 2.0 and np.percentile(np.abs(stretched - reference), 99) <= 6
    assert np.percentile(to_uint8(export), 99) < 128  # the v1 behaviour it fixes: passed through, half the range unused
    assert stretched.max() == 255 and stretched.min() == 0


def test_stretch_8bit_uses_the_window_and_inverts_like_deeper_data():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    spec = PreprocessSpec(stretch_8bit=True)
    windowed = to_uint8(Frame(values, "x", window=(128.0, 64.0)), spec)
    assert (windowed == 0).mean() > 0.35 and (windowed == 255).mean() > 0.35
    inverted = to_uint8(Frame(values, "x", window=(128.0, 64.0), invert=True), spec)
    np.testing.assert_array_equal(inverted, 255 - windowed)


def test_voi_window_follows_dicom_linear_function():
    # PS3.3 C.11.2.1.2.1 with center 100, width 21: 89.5 -> 0 and 109.5 -> 255
    values = np.array([[0, 89, 90, 99.5, 109, 110, 4000]], np.float32)
    out = to_uint8(Frame(values, "x", window=(100.0, 21.0)))
    expected = np.clip((values - 89.5) / 20 * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0] == 0 and out[0, -1] == 255


def test_window_ignored_when_spec_says_so():
    values = np.linspace(0, 1000, 100 * 100, dtype=np.float32).reshape(100, 100)
    windowed = to_uint8(Frame(values, "x", window=(100.0, 20.0)))
    stretched = to_uint8(Frame(values, "x", window=(100.0, 20.0)), PreprocessSpec(use_voi_window=False))
    assert (windowed == 255).mean() > 0.8
    assert (stretched == 255).mean() < 0.02


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.int32])
def test_percentile_stretch_is_robust_to_outliers(dtype):
    rng = np.random.default_rng(1)
    img = rng.integers(100, 1100, (128, 128)).astype(dtype)
    img[0, 0] = 30000  # one hot pixel must not squash the range
    out = to_uint8(img)
    lo, hi = np.percentile(img, [0.5, 99.5])
    assert out.min() == 0 and out.max() == 255
    assert abs(int(out[img == img[5, 5]][0]) - (img[5, 5] - lo) / (hi - lo) * 255) <= 2


def test_histogram_and_numpy_percentiles_agree():
    img = rng_image((64, 64), np.uint16, seed=3) // 16
    np.testing.assert_allclose(
        to_uint8(img).astype(int), to_uint8(img.astype(np.float32)).astype(int), atol=1)


def test_monochrome1_inverted_after_windowing():
    values = np.arange(256, dtype=np.uint16).reshape(16, 16) * 10
    normal = to_uint8(Frame(values, "x", window=(1280.0, 2560.0)))
    inverted = to_uint8(Frame(values, "x", window=(1280.0, 2560.0), invert=True))
    np.testing.assert_array_equal(inverted, 255 - normal)


def test_constant_image_does_not_divide_by_zero():
    assert to_uint8(np.full((8, 8), 500, np.uint16)).max() == 0


def test_empty_image_is_an_input_error():
    with pytest.raises(InputError) as info:
        to_uint8(np.zeros((0, 5), np.uint16))
    assert info.value.reason == "empty"


def test_one_matches_plain_opencv_reference():
    img = rng_image((300, 260), seed=5)
    reference = cv2.resize(cv2.createCLAHE(2.0, (8, 8)).apply(img), (224, 224), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(Preprocessor(threads=1).one(img), reference)


def test_upscaling_uses_linear_interpolation():
    img = rng_image((64, 64), seed=6)
    reference = cv2.resize(cv2.createCLAHE(2.0, (8, 8)).apply(img), (224, 224), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(Preprocessor(threads=1).one(img), reference)


def test_manifest_parameters_are_used():
    spec = PreprocessSpec(clahe_clip_limit=4.0, clahe_tile_grid=(4, 4), resize_down="nearest")
    img = rng_image((100, 100), seed=7)
    reference = cv2.resize(cv2.createCLAHE(4.0, (4, 4)).apply(img), (50, 40), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(Preprocessor(spec, size=(40, 50), threads=1).one(img), reference)


def test_batch_of_mixed_sizes_and_depths_threaded_equals_serial():
    slices = [rng_image((512, 512), seed=1), rng_image((256, 300), np.uint16, seed=2),
              *read_frames(dicom_file("MR_small.dcm")), rng_image((96, 96), seed=3)]
    threaded = Preprocessor(size=(64, 64), threads=2)(slices)
    serial = Preprocessor(size=(64, 64), threads=1)(slices)
    assert threaded.shape == (4, 64, 64, 1) and threaded.dtype == np.uint8
    np.testing.assert_array_equal(threaded, serial)


def test_unknown_interpolation_names_valid_ones():
    with pytest.raises(ValueError, match="Valid: area"):
        Preprocessor(PreprocessSpec(resize_down="bicubic"))
