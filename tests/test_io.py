"""Readers: every image format and DICOM transfer syntax, and every bad-input class."""

from __future__ import annotations

import shutil
import struct
import zlib

import cv2
import numpy as np
import pydicom
import pytest

from asinfer.engine import InputError, iter_files, read_frames

from conftest import dicom_file, rng_image

MR_REFERENCE = "MR_small.dcm"

# Every MR_small variant decodes to the same pixels: one file per transfer syntax.
LOSSLESS_MR = [
    "MR_small_implicit.dcm",  # Implicit VR Little Endian
    "MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "MR_small_RLE.dcm",  # RLE Lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
]

# Other transfer syntaxes: (file, frames, expected shape).
OTHER_SYNTAXES = [
    ("CT_small.dcm", 1, (128, 128)),  # Explicit VR LE, CT with a modality LUT
    ("JPEG2000.dcm", 1, (1024, 256)),  # JPEG 2000 (lossy)
    ("SC_rgb_jpeg_gdcm.dcm", 1, (100, 100)),  # JPEG Lossless SV1, RGB
    ("SC_rgb_jpeg_dcmtk.dcm", 1, (100, 100)),  # JPEG Baseline, YBR_FULL
    ("JPEGLSNearLossless_16.dcm", 1, (50, 10)),  # JPEG-LS near-lossless
    ("image_dfl.dcm", 1, (512, 512)),  # Deflated Explicit VR LE
    ("examples_ybr_color.dcm", 30, (240, 320)),  # multi-frame JPEG Baseline YBR_FULL_422
    ("SC_rgb_rle_2frame.dcm", 2, (100, 100)),  # multi-frame RLE RGB
]


def test_dicom_reference_keeps_stored_values_and_window():
    frames = read_frames(dicom_file(MR_REFERENCE))
    ds = pydicom.dcmread(dicom_file(MR_REFERENCE))
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0].pixels, ds.pixel_array)
    assert frames[0].window == (600.0, 1600.0)
    assert frames[0].invert is False
    assert frames[0].info["modality"] == "MR"


@pytest.mark.parametrize("name", LOSSLESS_MR)
def test_lossless_transfer_syntaxes_match_uncompressed(name):
    reference = read_frames(dicom_file(MR_REFERENCE))[0].pixels
    frame = read_frames(dicom_file(name))[0]
    assert frame.pixels.dtype.isnative
    np.testing.assert_array_equal(frame.pixels, reference)


@pytest.mark.parametrize("name,count,shape", OTHER_SYNTAXES)
def test_other_transfer_syntaxes_decode(name, count, shape):
    frames = read_frames(dicom_file(name))
    assert len(frames) == count
    assert [f.index for f in frames] == list(range(count))
    assert all(f.pixels.shape == shape for f in frames)
    assert all(np.ptp(f.pixels) > 0 for f in frames), "decoded to a constant image"


def test_modality_lut_is_carried_and_folded_into_the_8_bit_mapping():
    """Pixels stay as stored (no float copy); preprocessing maps the rescaled values, window included."""
    from asinfer.engine import Frame, to_uint8

    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    frame = read_frames(dicom_file("CT_small.dcm"))[0]
    np.testing.assert_array_equal(frame.pixels, ds.pixel_array)
    assert frame.rescale == (float(ds.RescaleSlope), float(ds.RescaleIntercept))
    rescaled = Frame(ds.pixel_array * frame.rescale[0] + frame.rescale[1], "x", window=frame.window)
    assert np.abs(to_uint8(frame).astype(int) - to_uint8(rescaled).astype(int)).max() <= 1
    no_window = Frame(frame.pixels, "x", rescale=(-2.0, 100.0))  # a negative slope flips the stretch
    flipped = to_uint8(Frame(frame.pixels * -2.0 + 100.0, "x"))
    assert np.abs(to_uint8(no_window).astype(int) - flipped.astype(int)).max() <= 1


def test_dicom_recognised_by_content_without_extension(tmp_path):
    target = tmp_path / "IM0001"
    shutil.copy(dicom_file(MR_REFERENCE), target)
    assert read_frames(target)[0].pixels.shape == (64, 64)
    assert list(iter_files(tmp_path)) == [target]


def test_monochrome1_sets_invert(tmp_path):
    ds = pydicom.dcmread(dicom_file(MR_REFERENCE))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    assert read_frames(tmp_path / "m1.dcm")[0].invert is True


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_grey_png_tiff_8_and_16_bit(tmp_path, ext, dtype):
    img = rng_image((40, 30), dtype)
    path = tmp_path / f"img{ext}"
    assert cv2.imwrite(str(path), img)
    frame = read_frames(path)[0]
    assert frame.pixels.dtype == dtype
    np.testing.assert_array_equal(frame.pixels, img)


@pytest.mark.parametrize("channels,code", [(3, cv2.COLOR_BGR2GRAY), (4, cv2.COLOR_BGRA2GRAY)])
def test_colour_becomes_grey(tmp_path, channels, code):
    img = rng_image((20, 24, channels))
    cv2.imwrite(str(tmp_path / "c.png"), img)
    np.testing.assert_array_equal(read_frames(tmp_path / "c.png")[0].pixels, cv2.cvtColor(img, code))


def test_jpeg(tmp_path):
    img = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    cv2.imwrite(str(tmp_path / "a.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    frame = read_frames(tmp_path / "a.jpg")[0]
    assert frame.pixels.shape == (48, 64)
    assert np.abs(frame.pixels.astype(int) - img).max() < 8


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_pixel_limit_is_read_from_the_header(tmp_path, ext):
    """The bomb guard sizes the image from its header: one pixel over the limit is refused, exactly at it decodes."""
    cv2.imwrite(str(tmp_path / f"x{ext}"), rng_image((37, 53)))
    with pytest.raises(InputError, match="53x37 pixels exceeds the limit of 1960") as info:
        read_frames(tmp_path / f"x{ext}", max_pixels=37 * 53 - 1)
    assert info.value.reason == "too-large"
    assert read_frames(tmp_path / f"x{ext}", max_pixels=37 * 53)[0].pixels.shape == (37, 53)


# --- bad input: one clear reason each ------------------------------------------


def _reason(path, **kw) -> str:
    with pytest.raises(InputError) as info:
        read_frames(path, **kw)
    assert "\n" not in str(info.value)
    return info.value.reason


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "nope.png") == "not-found"


def test_directory_is_unreadable(tmp_path):
    assert _reason(tmp_path) == "unreadable"


def test_text_file_is_not_an_image(tmp_path):
    (tmp_path / "notes.txt").write_text("patient notes")
    assert _reason(tmp_path / "notes.txt") == "not-an-image"


def test_empty_file_is_empty(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert _reason(tmp_path / "empty.png") == _reason(tmp_path / "empty.dcm") == "empty"


def test_truncated_png(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), rng_image((64, 64)))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert _reason(tmp_path / "cut.png") == "truncated"


def test_truncated_dicom_pixels():
    assert _reason(dicom_file("MR_truncated.dcm")) == "truncated"


def test_truncated_dicom_header(tmp_path):
    data = dicom_file(MR_REFERENCE).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:400])
    assert _reason(tmp_path / "cut.dcm") in ("truncated", "unreadable", "no-pixel-data")


def test_garbage_after_dicom_preamble_is_a_clean_error(tmp_path):
    # pydicom parses garbage leniently; whatever it makes of it, the result is
    # a one-line InputError (checked in _reason), never a crash.
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    assert _reason(tmp_path / "bad.dcm") in ("unreadable", "truncated", "no-pixel-data")


@pytest.mark.parametrize("name", ["rtplan.dcm", "test-SR.dcm"])
def test_dicom_without_pixels(name):
    assert _reason(dicom_file(name)) == "no-pixel-data"


def test_unsupported_compression_names_the_plugin():
    with pytest.raises(InputError) as info:
        read_frames(dicom_file("JPGExtended.dcm"))
    assert info.value.reason == "unsupported-compression"
    assert "pip install pylibjpeg-libjpeg" in str(info.value)


def test_pixel_limit_on_dicom():
    assert _reason(dicom_file(MR_REFERENCE), max_pixels=64 * 64 - 1) == "too-large"


def test_decompression_bomb_png_refused_before_decoding(tmp_path):
    # A valid PNG header claiming 100k x 100k pixels, followed by a tiny IDAT.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(data)
    with pytest.raises(InputError) as info:
        read_frames(tmp_path / "bomb.png")
    assert info.value.reason == "too-large"
    assert "100000x100000" in str(info.value)


def test_walk_skips_non_images_and_hidden(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "sub" / "b.png"), rng_image((8, 8)))
    shutil.copy(dicom_file(MR_REFERENCE), tmp_path / "sub" / "deeper" / "IM1")
    (tmp_path / "labels.csv").write_text("path,label\n")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_files(tmp_path)]
    assert found == ["sub/b.png", "sub/deeper/IM1"]
