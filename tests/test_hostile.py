"""Hostile inputs: each class the hardening review found, rebuilt here in tmp, must give one clear row.

The classes (issue 11): memory amplification, pixel-limit bypasses,
hangs on non-regular files, tampered bundles, deep or looping folder trees,
silent skips, wrong reasons, quadratic batches and stderr leaks. Cases that
could hang or exhaust memory on a regression run in a subprocess with a
timeout and a memory measurement, so a regression fails the test instead of
the test run.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from asinfer import engine
from asinfer.engine import InputError, ModelError, load_slices, read_frames

from conftest import dicom_file, rng_image

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="os.mkfifo: POSIX only")
MR_SMALL = "MR_small.dcm"


def _reason(path, **limits) -> str:
    with pytest.raises(InputError) as info:
        read_frames(path, **limits)
    return info.value.reason


def _run(code: str, timeout: float = 120) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line. Adds peak RSS (MB) of that process.

    The peak is VmHWM of /proc/self/status: ru_maxrss would carry the pytest process's own peak across the
    fork and exec on Linux.
    """
    script = textwrap.dedent(code) + textwrap.dedent("""
        import json as _j, resource as _r
        try:
            _peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
        except OSError:
            _peak = _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024
        print(_j.dumps({**RESULT, "peak_rss_mb": _peak}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def _dataset(rows: int, cols: int, frames: int = 1, bits: int = 16, pixels: bytes | None = None,
             syntax: str = ExplicitVRLittleEndian, **extra) -> pydicom.Dataset:
    """A minimal MR image dataset (uncompressed unless ``pixels`` and ``syntax`` say otherwise)."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UID("1.2.840.10008.5.1.4.1.1.4")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "MR", rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels if pixels is not None else bytes(rows * cols * frames * bits // 8)
    return ds


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


# --- 1. memory amplification ---------------------------------------------------------------------------------


def test_many_tiny_frames_stream_in_bounded_memory(tmp_path):
    """20,000 frames of 1x1 (40 KB of pixels): every frame gets a row, none are all held (was 1.15 GB, 61 s)."""
    path = _save(_dataset(1, 1, frames=20_000), tmp_path / "frames.dcm")
    result = _run(f"""
        from asinfer.engine import load_slices, Preprocessor
        rows = ok = 0
        for s in load_slices({str(path)!r}, Preprocessor(size=(224, 224))):
            rows += 1
            ok += s.ok
        RESULT = {{"rows": rows, "ok": ok}}
    """)
    assert result["rows"] == result["ok"] == 20_000
    assert result["peak_rss_mb"] < 400, result


def _deflated(path: Path, rows: int, cols: int, declared: tuple[int, int] | None = None) -> Path:
    """A deflated MR dataset of zeros; ``declared`` (rows, cols) may differ from the pixel data's size."""
    shown = declared or (rows, cols)
    ds = _dataset(shown[0], shown[1], pixels=bytes(rows * cols * 2), syntax="1.2.840.10008.1.2.1.99")
    return _save(ds, path)


def test_deflated_dataset_larger_than_the_limit_is_refused_while_inflating(tmp_path):
    """A few KB that inflate past the memory limit are refused as they stream (was: inflated in full first)."""
    path = _deflated(tmp_path / "bomb.dcm", 4096, 4096, declared=(16, 16))  # 32 MB of zeros claiming 16x16
    assert path.stat().st_size < 100_000
    with pytest.raises(InputError, match="inflates past") as info:
        read_frames(path, max_pixels=1 << 20)
    assert info.value.reason == "too-large"


def test_two_inputs_at_the_memory_limit_both_get_rows_in_bounded_memory(tmp_path):
    """The largest frame the default limits admit (256 MB decoded), twice in one folder: both get a row, and the
    second does not pay for the first (was: about 4 GB per such input, and MemoryError for its neighbour)."""
    for name in ("a.dcm", "b.dcm"):
        _deflated(tmp_path / name, 8192, 16384)
    result = _run(f"""
        from asinfer.engine import load_slices, Preprocessor
        rows = [s.reason for s in load_slices({str(tmp_path)!r}, Preprocessor(size=(224, 224)))]
        RESULT = {{"reasons": rows}}
    """, timeout=300)
    assert result["reasons"] == [None, None]
    assert result["peak_rss_mb"] < 1200, result


# --- 2. pixel-limit bypasses ---------------------------------------------------------------------------------


def _jpeg(tmp_path: Path) -> bytes:
    ok, data = cv2.imencode(".jpg", rng_image((16, 16)))
    assert ok
    return data.tobytes()


def test_jpeg_with_fill_bytes_before_its_frame_header_is_sized_not_decoded_blind(tmp_path):
    """One 0xFF fill byte before SOF hid the size from the old check; a 30000x30000 header must be refused."""
    data = bytearray(_jpeg(tmp_path))
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    struct.pack_into(">HH", data, sof + 5, 30000, 30000)
    data[sof:sof] = b"\xff"  # a fill byte (ITU T.81 B.1.1.2)
    (tmp_path / "fill.jpg").write_bytes(bytes(data))
    with pytest.raises(InputError, match="30000x30000") as info:
        read_frames(tmp_path / "fill.jpg")
    assert info.value.reason == "too-large"


def _tiff_with_duplicate_size_tags(small: int, large: int) -> bytes:
    """A little-endian TIFF whose ImageWidth/ImageLength appear twice: large first, then small (a reader taking
    the last value sees a small image; the decoder allocates the large one)."""
    entries = [(256, 4, 1, large), (257, 4, 1, large), (256, 3, 1, small), (257, 3, 1, small), (258, 3, 1, 8),
               (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 3, 1, small), (279, 4, 1, small * small)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8 + small * small) + bytes(small * small) + ifd


def test_tiff_with_repeated_size_tags_counts_the_largest(tmp_path):
    (tmp_path / "dup.tif").write_bytes(_tiff_with_duplicate_size_tags(4, 40000))
    with pytest.raises(InputError, match="40000x40000") as info:
        read_frames(tmp_path / "dup.tif")
    assert info.value.reason == "too-large"


def _patched_jpeg_ls(width: int, height: int) -> pydicom.Dataset:
    """pydicom's JPEG-LS test file with its codestream claiming another size than its header."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(dicom_file("MR_small_jpeg_ls_lossless.dcm"))
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    frame = bytearray(frame)
    sof = frame.find(b"\xff\xf7")
    struct.pack_into(">HH", frame, sof + 5, height, width)
    ds.PixelData = encapsulate([bytes(frame)])
    return ds


def test_jpeg_ls_codestream_larger_than_its_header_is_corrupt_not_decoded(tmp_path):
    """3.3 KB used to decode to 0.96 GB and an OK row; the codestream's own size must match the header."""
    path = _save(_patched_jpeg_ls(20000, 24000), tmp_path / "jls.dcm")
    result = _run(f"""
        from asinfer.engine import read_frames, InputError
        try:
            read_frames({str(path)!r})
            RESULT = {{"reason": None}}
        except InputError as exc:
            RESULT = {{"reason": exc.reason, "message": exc.message}}
    """)
    assert result["reason"] == "corrupt-pixel-data" and "20000x24000 in its codestream" in result["message"]
    assert result["peak_rss_mb"] < 300, result


def test_png_within_the_pixel_limit_but_not_the_memory_limit_is_refused(tmp_path):
    """16-bit RGBA: 8 bytes a pixel; sized from IHDR, the bytes are what is checked, before decoding."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 16000, 16000, 16, 6, 0, 0, 0)
    (tmp_path / "rgba16.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    with pytest.raises(InputError, match="over the memory limit") as info:
        read_frames(tmp_path / "rgba16.png")
    assert info.value.reason == "too-large"


# --- 3. hangs on what is not a regular file ------------------------------------------------------------------


@needs_fifo
def test_fifos_and_devices_get_a_row_without_being_opened(tmp_path, tiny_bundle):
    folder = tmp_path / "series"
    folder.mkdir()
    shutil.copy(dicom_file(MR_SMALL), folder / "a.dcm")
    os.mkfifo(folder / "pipe.dcm")
    os.mkfifo(tmp_path / "direct.png")
    os.symlink("/dev/zero", folder / "zero.dcm")
    result = _run(f"""
        from asinfer import engine
        clf = engine.load({str(tiny_bundle)!r}, provider="cpu")
        rows = [(p.source.rsplit("/", 1)[-1], p.reason) for p in
                clf.predict([{str(folder)!r}, {str(tmp_path / "direct.png")!r}])]
        RESULT = {{"rows": rows}}
    """, timeout=60)
    assert [tuple(r) for r in result["rows"]] == [("a.dcm", None), ("pipe.dcm", "not-a-file"),
                                                  ("zero.dcm", "not-a-file"), ("direct.png", "not-a-file")]


# --- 6. bundles that cannot be altered silently --------------------------------------------------------------


@pytest.mark.parametrize("change, field", [({"labels": ["AS", "no AS"]}, "labels"), ({"threshold": 0.0}, "threshold"),
                                           ({"preprocessing": {"clahe_clip_limit": 40.0}}, "preprocessing")])
def test_editing_what_decides_results_in_manifest_json_is_refused(bundle_copy, change, field):
    """Labels, threshold and preprocessing are checked against the copy inside the hash-verified artifact."""
    path = bundle_copy / "manifest.json"
    data = json.loads(path.read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=f"{field}.*differs from the copy embedded in"):
        engine.load(bundle_copy, provider="cpu")


def test_a_lone_onnx_is_unverified_unless_pinned(bundle_copy, tmp_path):
    lone = tmp_path / "lone.onnx"
    shutil.copy(bundle_copy / "model.int8.onnx", lone)
    digest = engine.bundle.sha256_file(lone)
    assert engine.verify(lone)["onnx-int8"].status == engine.bundle.UNHASHED
    assert engine.load(lone, provider="cpu", sha256=digest).artifact.sha256 == digest
    data = bytearray(lone.read_bytes())
    data[-1] ^= 0xFF
    lone.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        engine.load(lone, provider="cpu", sha256=digest)


# --- 8. deep trees -------------------------------------------------------------------------------------------


def test_a_1200_level_folder_tree_is_walked(tmp_path):
    deep = tmp_path
    for _ in range(1200):  # one level at a time: pathlib's mkdir(parents=True) recurses
        deep = deep / "d"
        deep.mkdir()
    cv2.imwrite(str(deep / "x.png"), rng_image((16, 16)))
    try:
        (item,) = load_slices(tmp_path)
        assert item.ok and item.source.endswith("/d/x.png")
    finally:  # shutil.rmtree, which pytest cleans tmp with, recurses too deep for this tree
        (deep / "x.png").unlink()
        while deep != tmp_path:
            deep.rmdir()
            deep = deep.parent


# --- 9. nothing skipped silently -----------------------------------------------------------------------------


def test_linked_series_folders_are_followed_and_loops_stopped(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    cv2.imwrite(str(real / "a.png"), rng_image((16, 16)))
    study = tmp_path / "study"
    study.mkdir()
    os.symlink(real, study / "series")
    os.symlink(study, study / "series" / "loop")  # study/series/loop -> study: a cycle
    skipped = []
    sources = [s.source for s in load_slices(study, on_skip=lambda path, why: skipped.append(why))]
    assert sources == [str(study / "series" / "a.png")]
    assert skipped == ["folder seen before (a link loop)"]


def test_hidden_entries_and_non_images_are_reported_not_silently_dropped(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), rng_image((16, 16)))
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "DICOMDIR").write_bytes(b"x")
    skipped = {}
    rows = list(load_slices(tmp_path, on_skip=lambda path, why: skipped.update({Path(path).name: why})))
    assert [Path(s.source).name for s in rows] == ["a.png"]
    assert skipped == {".hidden.png": "hidden", "notes.txt": "not an image or DICOM file",
                       "DICOMDIR": "DICOMDIR index"}


def _bare(ds: pydicom.Dataset, path: Path) -> Path:
    """The dataset alone, implicit VR little endian, no preamble or meta group: as some PACS exports write."""
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    with open(path, "wb") as fh:
        out = DicomFileLike(fh)
        out.is_little_endian, out.is_implicit_VR = True, True
        write_dataset(out, ds)
    return path


def test_dicom_without_preamble_or_extension_is_found_by_content(tmp_path):
    ds = pydicom.dcmread(dicom_file(MR_SMALL))
    _bare(ds, tmp_path / "IM0001")
    assert (tmp_path / "IM0001").read_bytes()[128:132] != b"DICM"
    (item,) = load_slices(tmp_path)
    assert item.ok and item.source.endswith("IM0001")


def test_every_page_of_a_multi_page_tiff_is_a_slice(tmp_path):
    pages = [rng_image((20, 30), seed=i) for i in range(3)]
    assert cv2.imwritemulti(str(tmp_path / "pages.tif"), pages)
    frames = read_frames(tmp_path / "pages.tif")
    assert [f.index for f in frames] == [0, 1, 2]
    for frame, page in zip(frames, pages):
        np.testing.assert_array_equal(frame.pixels, page)


def test_a_folder_that_cannot_be_listed_gets_a_row(tmp_path, monkeypatch):
    cv2.imwrite(str(tmp_path / "a.png"), rng_image((16, 16)))
    (tmp_path / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):  # as root, chmod 000 does not lock a folder: simulate what a user sees
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    rows = [(Path(s.source).name, s.reason) for s in load_slices(tmp_path)]
    assert rows == [("a.png", None), ("locked", "unreadable")]


def test_a_file_that_cannot_be_statted_gets_a_row_and_the_batch_goes_on(tmp_path, monkeypatch):
    cv2.imwrite(str(tmp_path / "a.png"), rng_image((16, 16)))
    secret = tmp_path / "no access" / "b.png"
    real_stat = os.stat

    def stat(path, *args, **kwargs):  # what a file inside a folder without x permission gives a user
        if "no access" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    rows = [(Path(s.source).name, s.reason) for s in load_slices([tmp_path / "a.png", secret])]
    assert rows == [("a.png", None), ("b.png", "unreadable")]


# --- 10. reasons that say what is wrong ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"])
def test_damaged_compressed_pixels_are_corrupt_not_a_missing_plugin(tmp_path, name):
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(dicom_file(name))
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    keep = 64 if "RLE" in name else len(frame) // 3  # the codestream header survives, the data does not
    damaged = frame[:keep] + bytes(range(256))[: len(frame) - keep]
    ds.PixelData = encapsulate([damaged])
    path = _save(ds, tmp_path / name)
    assert _reason(path) in ("corrupt-pixel-data", "truncated")


@pytest.mark.parametrize("keyword, value", [("NumberOfFrames", b"abc     "), ("NumberOfFrames", b"-1      "),
                                            ("RescaleSlope", b"abc     "), ("RescaleSlope", b"inf     ")])
def test_malformed_header_values_are_unreadable_not_internal(tmp_path, keyword, value):
    """pydicom will not write such values, so they are patched into the bytes of a valid file."""
    ds = pydicom.dcmread(dicom_file(MR_SMALL))
    setattr(ds, keyword, "12345678")  # a placeholder of the same length
    path = tmp_path / "bad.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert data.count(b"12345678") == 1
    path.write_bytes(data.replace(b"12345678", value))
    with pytest.raises(InputError, match=keyword) as info:
        read_frames(path)
    assert info.value.reason == "unreadable"


def test_a_jpeg_lossless_frame_that_aborts_gdcm_does_not_end_the_run(tmp_path):
    """gdcm, the only JPEG lossless decoder here, aborts the process on this damage (one byte before a DHT
    marker); the engine decodes that syntax in a child process, so the row says corrupt and the run goes on."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(dicom_file("SC_rgb_jpeg_gdcm.dcm"))
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    at = frame.find(b"\xff\xc4")
    ds.PixelData = encapsulate([frame[:at] + b"\x00" + frame[at:]])
    _save(ds, tmp_path / "a.dcm")
    shutil.copy(dicom_file("SC_rgb_jpeg_gdcm.dcm"), tmp_path / "b.dcm")
    result = _run(f"""
        from asinfer.engine import load_slices
        RESULT = {{"reasons": [s.reason for s in load_slices({str(tmp_path)!r})]}}
    """)
    assert result["reasons"] == ["corrupt-pixel-data", None]
    assert "terminate" not in result["stderr"] and "gdcm" not in result["stderr"]


def test_zero_rows_is_unreadable(tmp_path):
    ds = pydicom.dcmread(dicom_file(MR_SMALL))
    ds.Rows = 0
    ds.save_as(tmp_path / "rows.dcm", enforce_file_format=True)
    assert _reason(tmp_path / "rows.dcm") == "unreadable"


def test_truncated_header_says_truncated(tmp_path):
    data = dicom_file(MR_SMALL).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:600])
    (tmp_path / "zero.dcm").write_bytes(b"")
    assert _reason(tmp_path / "cut.dcm") == "truncated"
    assert _reason(tmp_path / "zero.dcm") == "empty"


def test_a_non_finite_voi_window_falls_back_to_the_stretch_instead_of_a_black_slice(tmp_path):
    ds = pydicom.dcmread(dicom_file(MR_SMALL))
    ds.WindowCenter, ds.WindowWidth = "600", "inf"
    path = tmp_path / "inf.dcm"
    ds.save_as(path, enforce_file_format=True)
    (frame,) = read_frames(path)
    assert frame.window is None
    assert np.ptp(engine.to_uint8(frame)) > 100


# --- 11. streaming and quiet -----------------------------------------------------------------------------------


def test_failures_stream_out_and_are_not_held_until_a_batch_fills(classifier, tmp_path):
    """Rows for failing inputs come out as they are read (was: held, and re-counted per input: quadratic)."""
    pulled = []

    def inputs():
        for i in range(2000):
            pulled.append(i)
            yield tmp_path / f"missing-{i}.png"

    first = next(classifier.iter_predict(inputs(), batch_size=8))
    assert first.reason == "not-found" and len(pulled) < 200


def test_no_decoder_or_pydicom_warning_reaches_stderr(tmp_path, tiny_bundle):
    """OpenCV warnings and pydicom's value warnings (which quote element values: patient data) stay quiet."""
    cv2.imwrite(str(tmp_path / "a.png"), rng_image((32, 32)))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(data[:60] + b"\0" * 40)
    ds = pydicom.dcmread(dicom_file(MR_SMALL))
    ds.StudyInstanceUID = "SMITH^JOHN-1955"  # an invalid UI value: pydicom warns and quotes it
    ds.save_as(tmp_path / "c.dcm", enforce_file_format=True)
    done = subprocess.run([sys.executable, "-m", "asinfer.engine", "predict", str(tmp_path), "-m", str(tiny_bundle),
                           "-f", "csv"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # bad.png fails, with its row
    assert "SMITH" not in done.stderr and "WARN" not in done.stderr and "libpng" not in done.stderr, done.stderr


def test_info_says_a_lone_onnx_is_unverified_and_checks_a_pin(bundle_copy, tmp_path):
    from typer.testing import CliRunner

    from asinfer.engine.cli import app

    lone = tmp_path / "lone.onnx"
    shutil.copy(bundle_copy / "model.int8.onnx", lone)
    digest = engine.bundle.sha256_file(lone)
    runner = CliRunner()
    plain = runner.invoke(app, ["info", str(lone)])
    assert plain.exit_code == 0 and "unverified" in plain.stdout
    pinned = runner.invoke(app, ["info", str(lone), "--sha256", digest])
    assert pinned.exit_code == 0 and "unverified" not in pinned.stdout and " ok" in pinned.stdout
    wrong = runner.invoke(app, ["info", str(lone), "--sha256", "0" * 64])
    assert wrong.exit_code == 2 and "sha256 mismatch" in wrong.stderr
    refused = runner.invoke(app, ["predict", str(tmp_path), "-m", str(lone), "--sha256", "0" * 64])
    assert refused.exit_code == 2 and "sha256 mismatch" in refused.stderr


def test_memory_limit_is_an_option(tmp_path, tiny_bundle):
    from typer.testing import CliRunner

    from asinfer.engine.cli import app

    cv2.imwrite(str(tmp_path / "big.png"), rng_image((2048, 1024)))  # 2 MB decoded
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "big.png"), "-m", str(tiny_bundle), "-f", "csv",
                                      "--max-memory", "1"])
    assert result.exit_code == 1 and "too-large" in result.stdout and "--max-memory" in result.stdout
