"""Fuzzing the readers and the manifest parser: seeds, mutations, the contract, and a long supervised run.

    python -m asinfer.benchmarks.fuzz --seconds 600 --out tests/data/fuzz-corpus
    python -m asinfer.benchmarks.fuzz --replay tests/data/fuzz-corpus/*

The contract (the engine's error policy) checked for every input:

* ``read_frames(path, max_pixels)`` returns frames (each ``pixels`` a 2-D
  array, all together within ``max_pixels``) or raises ``InputError`` whose
  reason is in ``REASONS`` and is not ``internal``; nothing else, no hang,
  no memory beyond what the pixel limit allows;
* ``load_slices([path])`` yields one Slice per frame read, or (a failed
  read) the frames before the failure and then one failing Slice with the
  same reason; never a ``internal`` one, and it never raises;
* ``Manifest.from_json(text)`` returns a Manifest that survives
  ``to_json`` -> ``from_json`` or raises ``ModelError``.

Inputs are mutated *valid* files, so mutations get past the magic numbers:
pydicom's test files (native, RLE, JPEG, JPEG-LS, JPEG 2000, deflate,
multi-frame), PNG/JPEG/TIFF written with OpenCV, and manifests. Mutations are
one vocabulary (:data:`MUTATORS`, each ``(data, a, b) -> data``): byte flips,
truncation, header fields (PNG IHDR with its CRC fixed, JPEG SOF, TIFF tags
and IFD links, DICOM Rows/Columns/Bits/fragment lengths), chunk duplication
(PNG chunks, JPEG segments with 0xFF fill, TIFF tags), DICOM dataset edits
saved back (:data:`DICOM_EDITS`), zlib bombs, and JSON-aware manifest edits.
``tests/test_fuzz.py`` draws the same mutations with hypothesis.

The long run keeps one worker process that generates, checks and saves; the
parent watches it: an input that runs past ``--timeout-s`` is saved as a
hang, one past ``--slow-s`` twice as slow, a worker killed by a signal as a
crash (with the C++ ``what()`` and Python stack faulthandler left), and a
blow-up as peak RSS growth past ``--memory-mb`` (or a ``MemoryError`` under
an address-space cap of 4x that) on the input that caused it; the worker is
then replaced. ``--engine atheris`` lets atheris (coverage-guided on the
Python code, ``pip install atheris``) drive the same mutations. Failing
inputs are saved, minimised by cutting chunks where cheap, as
``<stage>-<class>-<sha8><suffix>``, at most ``--keep`` per class.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

#: Pixel limit the fuzz runs use: small, so a guard that is missing shows as memory growth.
FUZZ_MAX_PIXELS = 1 << 20
#: Preprocessed size for the load_slices check (small: the contract, not the model, is tested).
SLICE_SIZE = (32, 32)
TIMEOUT_S = 10.0
SLOW_S = 5.0
MEMORY_MB = 256  # peak RSS growth one input may cause: 1 Mpx needs a few tens of MiB
ADDRESS_SPACE_FACTOR = 4  # address space left above the start: an allocation this large fails as MemoryError
KEEP = 3
_MEMORY_EXIT = 3  # a worker or replay child stopped after a memory problem: the rest needs a fresh process

DICOM_SEEDS = (
    "MR_small.dcm",  # Explicit VR LE, 16 bit, window, rescale
    "CT_small.dcm",  # modality LUT
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG2000.dcm",  # lossy JPEG 2000, 1024x256
    "JPEGLSNearLossless_16.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless, RGB
    "SC_rgb_rle_2frame.dcm",  # multi-frame RLE RGB
    "SC_rgb_small_odd.dcm",  # 3x3 RGB
    "rtdose_1frame.dcm",  # 32 bit
    "rtdose_rle.dcm",  # 15 frames, RLE, 32 bit
    "image_dfl.dcm",  # deflated dataset
    "liver_1frame.dcm",  # 1 bit
    "JPGExtended.dcm",  # 12-bit JPEG extended: no decoder in the base install (unsupported-compression)
)

SUFFIXES = (".dcm", ".png", ".jpg", ".tif", "", ".json")


@dataclass(frozen=True)
class Sample:
    """One input: its bytes and the file suffix it is written under (``.json``: a manifest)."""

    name: str
    suffix: str
    data: bytes


# --- seeds -----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def seeds() -> tuple[Sample, ...]:
    """Valid inputs of every kind the engine reads: DICOM, PNG, JPEG, TIFF, and manifests."""
    return (*_dicom_seeds(), *_mr_variants(), *_image_seeds(), *_manifest_seeds())


def _dicom_seeds() -> Iterator[Sample]:
    from pydicom.data import get_testdata_file

    for name in DICOM_SEEDS:
        path = get_testdata_file(name, download=False)
        if path is not None:  # .dcm: a file without the Part 10 preamble is DICOM by its suffix
            yield Sample(f"dicom/{name}", ".dcm", Path(path).read_bytes())


def _mr_variants() -> Iterator[Sample]:
    """MR_small as a 3-frame object (pydicom ships no small multi-frame MR locally), and as a bare
    dataset without preamble or file meta (DICOM by its suffix only)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.dataset import FileMetaDataset

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    frames = ds.copy()
    frames.PixelData = ds.PixelData * 3
    frames.NumberOfFrames = 3
    yield Sample("dicom/MR_small-3frames", ".dcm", _save(frames))
    ds.preamble, ds.file_meta = None, FileMetaDataset()
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=False)
    yield Sample("dicom/MR_small-bare", ".dcm", buf.getvalue())


def _image_seeds() -> Iterator[Sample]:
    import cv2
    import numpy as np

    y, x = np.mgrid[0:24, 0:32]
    grey8 = ((x * 7 + y * 3) % 256).astype(np.uint8)
    grey16 = (grey8.astype(np.uint16) * 257)
    rgb8 = np.dstack([grey8, grey8[::-1], 255 - grey8])
    rgba8 = np.dstack([rgb8, grey8])
    for name, img in (("grey8", grey8), ("grey16", grey16), ("rgb8", rgb8), ("rgba8", rgba8),
                      ("rgb16", rgb8.astype(np.uint16) * 257)):
        yield Sample(f"png/{name}", ".png", cv2.imencode(".png", img)[1].tobytes())
        yield Sample(f"tiff/{name}", ".tif", cv2.imencode(".tif", img)[1].tobytes())
    yield Sample("tiff/float32", ".tif", cv2.imencode(".tif", grey8.astype(np.float32) / 255)[1].tobytes())
    yield Sample("tiff/3pages", ".tif", _multipage_tiff([grey8, grey8[::-1], 255 - grey8]))
    for name, img in (("grey8", grey8), ("rgb8", rgb8)):
        yield Sample(f"jpeg/{name}", ".jpg", cv2.imencode(".jpg", img)[1].tobytes())
    yield Sample("jpeg/progressive", ".jpg",
                 cv2.imencode(".jpg", rgb8, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes())
    yield Sample("png/grey8-noext", "", cv2.imencode(".png", grey8)[1].tobytes())


def _multipage_tiff(pages) -> bytes:
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pages.tif")
        cv2.imwritemulti(path, pages)
        return Path(path).read_bytes()


def _manifest_seeds() -> Iterator[Sample]:
    from asinfer.engine import Artifact, InputSpec, Manifest, Tolerance, measure_parity

    record = measure_parity([0.1, 0.8, 0.3, 0.9], [0.12, 0.79, 0.33, 0.88], [0, 1, 0, 1], 0.5, rounds=20)
    record = record.__class__(**{**record.__dict__, "verdict": Tolerance(max_abs_dp=0.05).judge(record)})
    manifest = Manifest(
        name="fuzz", version="0.0.1", threshold=0.4, input=InputSpec(height=32, width=32),
        artifacts=(Artifact("onnx-fp32", "model.fp32.onnx", "0" * 64, 1234),),
        parity={"onnx-fp32": record}, training={"history": {"loss": [0.7, 0.5]}, "steps": 2},
        metrics={"auc": 0.9}, tools={"numpy": "2.0"}, created="2025-01-01T00:00:00Z")
    yield Sample("manifest/full", ".json", manifest.to_json().encode())
    yield Sample("manifest/minimal", ".json", b'{"schema_version": 2, "name": "m", "version": "1"}')
    schema1 = {"schema_version": 1, "name": "old", "version": "1",
               "parity": {"onnx-int8": {"n": 4, "threshold": 0.5, "max_abs_dp": 0.01, "mean_abs_dp": 0.005,
                                        "agreement": 1.0, "auc_keras": 0.9, "passed": True, "abs_dauc": 0.0,
                                        "tolerance": {"max_abs_dp": 0.1}}}}
    yield Sample("manifest/schema1", ".json", json.dumps(schema1).encode())


def _save(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


# --- DICOM dataset edits ---------------------------------------------------------------------------------------------

_RLE, _JPEG = "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50"
_JLS, _J2K = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"
_DEFLATE, _BIG, _IMPLICIT = "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2"
_HUGE = "99999999999999999999"

#: (keyword, value): a header lie saved back with pydicom. Strings are written raw (no validation), ints as US;
#: None deletes the element; ``TransferSyntaxUID`` is patched in the file meta without re-encoding the data.
DICOM_EDITS: tuple[tuple[str, object], ...] = (
    *(("NumberOfFrames", v) for v in ("abc", "-1", "1e9", "0", "2", "3.5", "", _HUGE, "nan", "4\\2")),
    *(("Rows", v) for v in (0, 1, 63, 65535)), *(("Columns", v) for v in (0, 1, 65535)),
    *(("BitsAllocated", v) for v in (0, 1, 7, 12, 32, 64)), *(("BitsStored", v) for v in (0, 1, 17, 40)),
    ("HighBit", 99), ("PixelRepresentation", 1), ("PixelRepresentation", 2),
    *(("SamplesPerPixel", v) for v in (0, 2, 3, 4)), ("PlanarConfiguration", 1), ("PlanarConfiguration", 7),
    *(("PhotometricInterpretation", v) for v in ("YBR_FULL", "YBR_FULL_422", "PALETTE COLOR", "RGB",
                                                 "MONOCHROME1", "", "FOO", "YBR_ICT")),
    *(("WindowWidth", v) for v in ("inf", "0", "-5", "nan", "1e400", "abc", "", "1\\2")),
    *(("WindowCenter", v) for v in ("nan", "inf", "1e308", "abc")),
    *(("RescaleSlope", v) for v in ("inf", "nan", "0", "1e300", "-1e300", "abc", "")),
    *(("RescaleIntercept", v) for v in ("-inf", "1e308", "nan")),
    ("PixelData", None), ("PixelData", b""), ("PixelData", "half"), ("PixelData", "double"),
    ("FloatPixelData", "move"), ("ExtendedOffsetTable", b"\xff" * 16),
    *(("TransferSyntaxUID", v) for v in (_RLE, _JPEG, _JLS, _J2K, _DEFLATE, _BIG, _IMPLICIT, "1.2.3.4",
                                         "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.51", "")),
)


def edit_dicom(data: bytes, keyword: str, value: object) -> bytes:
    """``data`` with one header lie saved back, or unchanged when pydicom cannot read or write it."""
    if keyword == "TransferSyntaxUID":
        return _set_transfer_syntax(data, str(value))
    import pydicom

    with _lenient_pydicom():
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            if "PixelData" not in ds and "Rows" not in ds:
                return data
            _apply_edit(ds, keyword, value)
            return _save(ds)
        except Exception:  # the edit does not fit this file: leave it
            return data


def _apply_edit(ds, keyword: str, value: object) -> None:
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    if keyword in ("PixelData", "FloatPixelData") and isinstance(value, str):
        pixels = ds.PixelData
        if value == "move":
            del ds.PixelData
            ds.FloatPixelData = pixels
        else:
            ds.PixelData = pixels[: len(pixels) // 2] if value == "half" else pixels * 2
    elif value is None:
        delattr(ds, keyword)
    elif isinstance(value, str):
        tag, raw = Tag(keyword), value.encode("ascii")
        raw += b" " * (len(raw) % 2)
        implicit, little = ds.original_encoding
        ds[tag] = RawDataElement(tag, pydicom_vr(keyword), len(raw), raw, 0, implicit is not False, little is not False)
    else:
        setattr(ds, keyword, value)


def pydicom_vr(keyword: str) -> str:
    from pydicom.datadict import dictionary_VR

    return dictionary_VR(keyword)


@contextlib.contextmanager
def _lenient_pydicom():
    """Let pydicom read and write invalid values while seeds are edited; restore the defaults after."""
    import warnings

    from pydicom import config

    saved = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved


def _set_transfer_syntax(data: bytes, uid: str) -> bytes:
    """Patch (0002,0010) in the file meta and fix the group length; the data stays encoded as it was."""
    pos = data.find(b"\x02\x00\x10\x00UI", 128, 1024)
    if pos < 0 or pos + 8 > len(data):
        return data
    old = struct.unpack("<H", data[pos + 6:pos + 8])[0]
    new = uid.encode() + b"\0" * (len(uid) % 2)
    out = data[:pos + 6] + struct.pack("<H", len(new)) + new + data[pos + 8 + old:]
    group = out.find(b"\x02\x00\x00\x00UL\x04\x00", 128, 256)
    if 0 <= group <= len(out) - 12:
        (length,) = struct.unpack("<I", out[group + 8:group + 12])
        out = out[:group + 8] + struct.pack("<I", (length + len(new) - old) & 0xFFFFFFFF) + out[group + 12:]
    return out


# --- structure: header fields and chunks -----------------------------------------------------------------------------


class Field(NamedTuple):
    """A number in a file header: where it is, how wide, and values worth trying besides the generic ones."""

    name: str
    offset: int
    width: int
    order: str  # "big" | "little"
    hints: tuple[int, ...] = ()
    crc_chunk: int | None = None  # start of the PNG chunk whose CRC must be fixed after a write


INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 127, 128, 255, 256, 4095, 4096, 32767,
               32768, 65535, 65536, 1 << 20, 1 << 24, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)


def header_fields(data: bytes) -> list[Field]:
    """The numeric header fields of a PNG, JPEG, TIFF or DICOM file (empty for anything else)."""
    if data.startswith(b"\x89PNG"):
        return _png_fields(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_fields(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_fields(data)
    return _dicom_fields(data)


def chunks(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each structural unit: PNG chunks, JPEG segments, TIFF IFD entries."""
    if data.startswith(b"\x89PNG"):
        return [(start, end) for start, end, _ in _png_chunks(data)]
    if data.startswith(b"\xff\xd8"):
        return [(start, end) for start, end, _ in _jpeg_segments(data)]
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        order = "little" if data[:2] == b"II" else "big"
        return [(pos, pos + 12) for ifd in _tiff_ifds(data, order) for pos in _tiff_entries(data, ifd, order)]
    return []


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    out, pos = [], 8
    while pos + 12 <= len(data) and len(out) < 64:
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 12 + length
        out.append((pos, min(end, len(data)), data[pos + 4:pos + 8]))
        pos = end
    return out


def _png_fields(data: bytes) -> list[Field]:
    fields = []
    for start, _, kind in _png_chunks(data):
        fields.append(Field(f"png {kind!r} length", start, 4, "big"))
        if kind == b"IHDR":
            for name, off, width, hints in (("width", 8, 4, (0, 1 << 15, 1 << 31)), ("height", 12, 4, (0, 1 << 15)),
                                            ("bit depth", 16, 1, (1, 2, 4, 8, 16, 3)),
                                            ("colour type", 17, 1, (0, 2, 3, 4, 6, 1, 7)),
                                            ("compression", 18, 1, (1,)), ("filter", 19, 1, (1,)),
                                            ("interlace", 20, 1, (1, 2))):
                fields.append(Field(f"IHDR {name}", start + off, width, "big", hints, crc_chunk=start))
    return fields


def _fix_png_crc(data: bytearray, start: int) -> None:
    length = int.from_bytes(data[start:start + 4], "big")
    end = start + 8 + length
    if end + 4 <= len(data):
        data[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(data[start + 4:end])))


_JPEG_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and len(out) < 64:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        end = pos + 2 if marker in _JPEG_STANDALONE else pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        out.append((pos, min(end, len(data)), marker))
        if marker == 0xDA:  # entropy-coded data follows
            break
        pos = end
    return out


def _jpeg_fields(data: bytes) -> list[Field]:
    fields = []
    for start, _, marker in _jpeg_segments(data):
        fields.append(Field(f"jpeg {marker:02X} length", start + 2, 2, "big", (0, 1, 2)))
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            fields += [Field("SOF precision", start + 4, 1, "big", (8, 12, 16, 0, 2)),
                       Field("SOF height", start + 5, 2, "big", (0, 65535)),
                       Field("SOF width", start + 7, 2, "big", (0, 65535)),
                       Field("SOF components", start + 9, 1, "big", (0, 1, 2, 3, 4, 5)),
                       Field("SOF sampling", start + 11, 1, "big", (0x11, 0x22, 0x44, 0x00, 0xFF))]
        elif marker == 0xDA:
            fields.append(Field("SOS components", start + 4, 1, "big", (0, 1, 3, 4)))
    return fields


def _tiff_ifds(data: bytes, order: str) -> list[int]:
    ifds, pos = [], int.from_bytes(data[4:8], order)
    while 8 <= pos < len(data) - 2 and pos not in ifds and len(ifds) < 8:
        ifds.append(pos)
        count = int.from_bytes(data[pos:pos + 2], order)
        nxt = pos + 2 + 12 * count
        pos = int.from_bytes(data[nxt:nxt + 4], order) if nxt + 4 <= len(data) else 0
    return ifds


def _tiff_entries(data: bytes, ifd: int, order: str) -> list[int]:
    count = int.from_bytes(data[ifd:ifd + 2], order)
    return [ifd + 2 + 12 * i for i in range(min(count, 64)) if ifd + 14 + 12 * i <= len(data)]


def _tiff_fields(data: bytes) -> list[Field]:
    order = "little" if data[:2] == b"II" else "big"
    ifds = _tiff_ifds(data, order)
    fields = [Field("tiff first IFD", 4, 4, order, (*ifds, 0, 8, len(data)))]
    for ifd in ifds:
        count = int.from_bytes(data[ifd:ifd + 2], order)
        fields += [Field("tiff IFD count", ifd, 2, order, (0, count + 1, 4096)),
                   Field("tiff next IFD", ifd + 2 + 12 * count, 4, order, (*ifds, ifd, 0))]  # self-links: cycles
        for pos in _tiff_entries(data, ifd, order):
            typ, n = int.from_bytes(data[pos + 2:pos + 4], order), int.from_bytes(data[pos + 4:pos + 8], order)
            width = 2 if typ == 3 and n == 1 else 4
            fields += [Field("tiff tag", pos, 2, order, (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 322)),
                       Field("tiff type", pos + 2, 2, order, (1, 3, 4, 5, 12, 16, 0, 99)),
                       Field("tiff count", pos + 4, 4, order, (0, n + 1, 1 << 30)),
                       Field("tiff value", pos + 8, width, order, (ifd, len(data), 5, 7, 32773, 34712))]
    return fields


# (group, element) of the DICOM numbers worth lying about, value at +8 in explicit and implicit VR alike.
_DICOM_US = {(0x0028, 0x0010): "Rows", (0x0028, 0x0011): "Columns", (0x0028, 0x0002): "SamplesPerPixel",
             (0x0028, 0x0006): "PlanarConfiguration", (0x0028, 0x0100): "BitsAllocated",
             (0x0028, 0x0101): "BitsStored", (0x0028, 0x0102): "HighBit", (0x0028, 0x0103): "PixelRepresentation"}


def _dicom_fields(data: bytes) -> list[Field]:
    fields = []
    for order in ("little", "big"):
        for (group, element), name in _DICOM_US.items():
            tag = group.to_bytes(2, order) + element.to_bytes(2, order)
            for pos in _find_all(data, tag, 4):
                fields.append(Field(f"dicom {name}", pos + 8, 2, order))
        pixel = (0x7FE0).to_bytes(2, order) + (0x0010).to_bytes(2, order)
        for pos in _find_all(data, pixel, 2):
            explicit = data[pos + 4:pos + 6] in (b"OB", b"OW")
            fields.append(Field("dicom PixelData length", pos + (8 if explicit else 4), 4, order, (0xFFFFFFFF,)))
    for pos in _find_all(data, b"\xfe\xff\x00\xe0", 16):  # encapsulated items: offset table and fragments
        fields.append(Field("dicom item length", pos + 4, 4, "little", (0xFFFFFFFF, 1 << 30)))
    return fields


def _find_all(data: bytes, needle: bytes, most: int) -> list[int]:
    out, pos = [], data.find(needle)
    while pos >= 0 and len(out) < most:
        out.append(pos)
        pos = data.find(needle, pos + 1)
    return out


# --- mutations -------------------------------------------------------------------------------------------------------


def _flip(data: bytes, a: int, b: int) -> bytes:
    if not data:
        return data
    pos = a % len(data)
    return data[:pos] + bytes([data[pos] ^ (1 << (b % 8))]) + data[pos + 1:]


def _byte(data: bytes, a: int, b: int) -> bytes:
    if not data:
        return data
    pos = a % len(data)
    return data[:pos] + bytes([INTERESTING_BYTES[b % len(INTERESTING_BYTES)]]) + data[pos + 1:]


def _int(data: bytes, a: int, b: int) -> bytes:
    width, order = ((2, "little"), (2, "big"), (4, "little"), (4, "big"))[(b // len(INTERESTING)) % 4]
    if len(data) < width:
        return data
    pos = a % (len(data) - width + 1)
    value = INTERESTING[b % len(INTERESTING)] & ((1 << 8 * width) - 1)
    return data[:pos] + value.to_bytes(width, order) + data[pos + width:]


def _truncate(data: bytes, a: int, b: int) -> bytes:
    return data[: a % (len(data) + 1)]


def _cut(data: bytes, a: int, b: int) -> bytes:
    pos = a % (len(data) + 1)
    return data[:pos] + data[pos + 1 + b % 256:]


def _duplicate(data: bytes, a: int, b: int) -> bytes:
    pos = a % (len(data) + 1)
    return data[:pos] + data[pos:pos + 1 + b % 256] + data[pos:]


def _insert(data: bytes, a: int, b: int) -> bytes:
    pos = a % (len(data) + 1)
    return data[:pos] + bytes([b & 0xFF]) * (1 + (b >> 8) % 64) + data[pos:]


def _field(data: bytes, a: int, b: int) -> bytes:
    fields = header_fields(data)
    if not fields:
        return data
    f = fields[a % len(fields)]
    choices = (*f.hints, *INTERESTING)
    value = choices[b % len(choices)] & ((1 << 8 * f.width) - 1)
    out = bytearray(data)
    out[f.offset:f.offset + f.width] = value.to_bytes(f.width, f.order)
    if f.crc_chunk is not None:
        _fix_png_crc(out, f.crc_chunk)
    return bytes(out)


def _chunk_dup(data: bytes, a: int, b: int) -> bytes:
    units = chunks(data)
    if not units:
        return data
    start, end = units[a % len(units)]
    fill = b"\xff" * (b % 8) if data.startswith(b"\xff\xd8") else b""  # JPEG allows 0xFF fill before a marker
    out = data[:end] + fill + data[start:end] + data[end:]
    return _bump_tiff_count(out, start, +1) if data[:4] in (b"II*\x00", b"MM\x00*") else out


def _chunk_drop(data: bytes, a: int, b: int) -> bytes:
    units = chunks(data)
    if not units:
        return data
    start, end = units[a % len(units)]
    out = data[:start] + data[end:]
    return _bump_tiff_count(out, start, -1) if data[:4] in (b"II*\x00", b"MM\x00*") else out


def _bump_tiff_count(data: bytes, entry: int, delta: int) -> bytes:
    """Change the entry count of the IFD holding ``entry`` (found by walking the IFDs of the original layout)."""
    order = "little" if data[:2] == b"II" else "big"
    for ifd in _tiff_ifds(data, order):
        count = int.from_bytes(data[ifd:ifd + 2], order)
        if ifd < entry <= ifd + 2 + 12 * count:
            new = (count + delta) & 0xFFFF
            return data[:ifd] + new.to_bytes(2, order) + data[ifd + 2:]
    return data


def _dicom(data: bytes, a: int, b: int) -> bytes:
    return edit_dicom(data, *DICOM_EDITS[a % len(DICOM_EDITS)])


@functools.lru_cache(maxsize=8)
def zlib_bomb(size: int, raw: bool = False) -> bytes:
    """``size`` zero bytes, deflated (zlib stream, or raw deflate for DICOM), made without holding them."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15 if raw else 15)
    block = bytes(1 << 20)
    parts = [comp.compress(block[: min(len(block), size - done)]) for done in range(0, size, len(block))]
    return b"".join(parts) + comp.flush()


def _bomb(data: bytes, a: int, b: int) -> bytes:
    """Replace the compressed payload with a deflate bomb: PNG IDAT, or a deflated DICOM dataset."""
    size = 1 << (20 + b % 9)  # 1 MiB .. 256 MiB of zeros
    if data.startswith(b"\x89PNG"):
        idat = [(s, e) for s, e, kind in _png_chunks(data) if kind == b"IDAT"]
        if not idat:
            return data
        body = zlib_bomb(size)
        chunk = bytearray(struct.pack(">I", len(body)) + b"IDAT" + body + b"\0\0\0\0")
        _fix_png_crc(chunk, 0)
        return data[:idat[0][0]] + bytes(chunk) + data[idat[-1][1]:]
    meta_end = _dicom_meta_end(data)
    if meta_end and _DEFLATE.encode() in data[:meta_end]:
        return data[:meta_end] + zlib_bomb(size, raw=True)
    return data


def _dicom_meta_end(data: bytes) -> int | None:
    group = data.find(b"\x02\x00\x00\x00UL\x04\x00", 128, 256)
    if not 0 <= group <= len(data) - 12:
        return None
    return group + 12 + struct.unpack("<I", data[group + 8:group + 12])[0]


#: Every mutation: ``(data, a, b) -> data``, ``a`` and ``b`` any non-negative ints (taken modulo what they index).
MUTATORS: dict[str, Callable[[bytes, int, int], bytes]] = {
    "flip": _flip, "byte": _byte, "int": _int, "truncate": _truncate, "cut": _cut, "duplicate": _duplicate,
    "insert": _insert, "field": _field, "chunk-dup": _chunk_dup, "chunk-drop": _chunk_drop, "dicom": _dicom,
    "bomb": _bomb,
}


def mutate(data: bytes, ops) -> bytes:
    """Apply ``ops`` (``(name, a, b)`` triples) in turn; JSON inputs also take the JSON-aware edits.

    A mutation that trips over its own input leaves it unchanged: a bug here must not pass for the engine's.
    """
    for name, a, b in ops:
        try:
            data = (MUTATORS.get(name) or JSON_MUTATORS[name])(data, a, b)
        except (ValueError, IndexError, struct.error, OverflowError):
            continue
    return data


def random_ops(rng: random.Random, sample: Sample, most: int = 4) -> list[tuple[str, int, int]]:
    """A short random mutation list for ``sample``: structure-aware ops weighted up, bombs rare."""
    names = [*JSON_MUTATORS, "flip", "int", "truncate", "cut", "insert"] if sample.suffix == ".json" else [
        "flip", "byte", "int", "truncate", "cut", "duplicate", "insert", *["field"] * 6, *["chunk-dup"] * 2,
        "chunk-drop", *(["dicom"] * 6 if sample.suffix == ".dcm" else [])]
    ops = [(rng.choice(names), rng.getrandbits(32), rng.getrandbits(32)) for _ in range(rng.randint(1, most))]
    if rng.random() < 0.01:
        ops.append(("bomb", 0, rng.getrandbits(8)))
    return ops


# --- manifest JSON mutations -----------------------------------------------------------------------------------------

_BIG_INT_TEXT = "1" + "0" * 5000  # more digits than int() takes by default (sys.get_int_max_str_digits)
INTERESTING_JSON = (None, True, False, 0, -1, 1, 2 ** 63, 10 ** 400, 1e308, -0.0, float("nan"), float("inf"),
                    "", " ", "x" * 300, "\ud800", "../x", [], [1, 2], ["a", "a"], {}, {"a": 1},
                    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]], "BIGINT")


def json_paths(value, prefix=()) -> list[tuple]:
    paths = [prefix]
    if isinstance(value, dict) and len(prefix) < 8:
        for k, v in value.items():
            paths += json_paths(v, (*prefix, k))
    elif isinstance(value, list) and len(prefix) < 8:
        for i, v in enumerate(value[:16]):
            paths += json_paths(v, (*prefix, i))
    return paths


def _json_edit(kind: str):
    def edit(data: bytes, a: int, b: int) -> bytes:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            return data
        paths = json_paths(doc)
        path = paths[a % len(paths)]
        doc = _json_apply(doc, path, kind, b)
        text = json.dumps(doc)
        return text.replace('"BIGINT"', _BIG_INT_TEXT).encode("utf-8", "surrogatepass")
    return edit


def _json_apply(doc, path: tuple, kind: str, b: int):
    if not path:
        return INTERESTING_JSON[b % len(INTERESTING_JSON)] if kind == "json-set" else [doc]
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if kind == "json-set":
        parent[key] = INTERESTING_JSON[b % len(INTERESTING_JSON)]
    elif kind == "json-drop" and isinstance(parent, dict):
        del parent[key]
    elif kind == "json-drop":
        parent.pop(key)
    elif kind == "json-wrap":
        parent[key] = [parent[key]] if b % 2 else {"x": parent[key]}
    elif kind == "json-add" and isinstance(parent, dict):
        parent[f"unknown{b % 3}"] = parent[key]
    return doc


#: Manifest edits on parsed JSON: set a value to an awkward one, drop it, wrap it, add an unknown sibling.
JSON_MUTATORS: dict[str, Callable[[bytes, int, int], bytes]] = {
    kind: _json_edit(kind) for kind in ("json-set", "json-drop", "json-wrap", "json-add")
}


# --- the contract ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A contract violation: ``key`` names its class (stage, what, where), ``detail`` says what happened."""

    key: str
    detail: str

    @classmethod
    def from_exception(cls, stage: str, exc: BaseException) -> "Problem":
        """Keyed by exception type, the innermost asinfer frame and the innermost frame overall."""
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if f.filename.startswith(_engine_dir())]
        where = _frame_name(ours[-1]) if ours else "?"
        inner = frames[-1] if frames else None
        what = "memory" if _is_memory(exc) else _type_name(exc)
        detail = f"{_type_name(exc)}: {_one_line(exc)}"
        if inner is not None:
            detail += f" [at {Path(inner.filename).name}:{inner.lineno} in {inner.name}; via {where}]"
        return cls(f"{stage}-{what}-{where}", detail)


@functools.lru_cache(maxsize=1)
def _engine_dir() -> str:
    import asinfer.engine

    return str(Path(asinfer.engine.__file__).resolve().parent)


def _frame_name(frame) -> str:
    return f"{Path(frame.filename).stem}.{frame.name}"


def _type_name(exc: BaseException) -> str:
    """``TypeError``, ``zlib.error``, ``pyo3_runtime.PanicException``: the module where the bare name is ambiguous."""
    kind = type(exc)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__.split('.')[0]}.{kind.__name__}"


class Deadline(BaseException):
    """Raised by :func:`deadline` when an input runs too long (a BaseException: readers' ``except Exception``
    must not swallow it)."""


#: Raised through the checks, never recorded as a problem: interruptions and the test's own deadline.
PASS_THROUGH = (KeyboardInterrupt, SystemExit, Deadline)


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise :class:`Deadline` in the main thread after ``seconds`` (SIGALRM: interrupts Python loops and
    blocking system calls such as opening a FIFO; a loop inside C code runs on until it returns)."""
    def expire(signum, frame):
        raise Deadline(f"no result after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _is_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "insufficient memory" in str(exc).lower() or "bad_alloc" in str(exc)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:240] or type(exc).__name__


def check_file(path: str | os.PathLike, max_pixels: int = FUZZ_MAX_PIXELS) -> list[Problem]:
    """Every contract violation of ``read_frames`` and ``load_slices`` on one file (``.json``: a manifest)."""
    if str(path).endswith(".json"):
        return check_manifest(Path(path).read_bytes())
    frames, error, problems = _check_read(path, max_pixels)
    return problems + _check_slices(path, max_pixels, frames, error)


def _check_read(path, max_pixels: int):
    from asinfer.engine import REASONS, InputError, read_frames

    try:
        frames = read_frames(path, max_pixels=max_pixels)
    except InputError as exc:
        if exc.reason not in REASONS or exc.reason == "internal":
            return None, exc, [Problem(f"read_frames-reason-{exc.reason}", _one_line(exc))]
        return None, exc, []
    except PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 - what the contract forbids (pyo3 panics are BaseExceptions)
        return None, exc, [Problem.from_exception("read_frames", exc)]
    return frames, None, _frame_problems(frames, max_pixels)


def _frame_problems(frames, max_pixels: int) -> list[Problem]:
    import numpy as np

    from asinfer.engine import Frame

    if not isinstance(frames, list) or not frames:
        return [Problem("read_frames-no-frames", f"returned {type(frames).__name__} of length "
                                                  f"{len(frames) if hasattr(frames, '__len__') else '?'}")]
    bad = [f for f in frames if not isinstance(f, Frame) or not isinstance(f.pixels, np.ndarray)
           or f.pixels.ndim != 2 or f.pixels.dtype == object]
    if bad:
        shape = getattr(getattr(bad[0], "pixels", None), "shape", None)
        return [Problem("read_frames-bad-frame", f"frame pixels are not a 2-D numeric array: shape {shape}")]
    total = sum(int(f.pixels.size) for f in frames)
    if total > max_pixels:
        return [Problem("read_frames-over-limit", f"{len(frames)} frame(s), {total} pixels > limit {max_pixels}")]
    return []


def _check_slices(path, max_pixels: int, frames, error) -> list[Problem]:
    """One Slice per frame read; for a failed read, the frames before the failure and then one failing Slice."""
    from asinfer.engine import Preprocessor, load_slices

    try:
        slices = list(load_slices([path], Preprocessor(size=SLICE_SIZE, threads=1), max_pixels=max_pixels))
    except PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001
        return [Problem.from_exception("load_slices", exc)]
    problems = _slice_problems(slices, frames, error)
    for s in slices:
        if s.reason == "internal" and not problems:
            kind = (s.message or "").split(":")[0] or "?"
            problems.append(Problem(f"load_slices-internal-{kind}", s.message or ""))
        elif s.ok and (s.image is None or s.image.shape != SLICE_SIZE or s.image.dtype != "uint8"):
            problems.append(Problem("load_slices-bad-image", f"image {getattr(s.image, 'shape', None)}"))
    return problems[:1]


def _slice_problems(slices, frames, error) -> list[Problem]:
    from asinfer.engine import InputError

    if frames:
        if len(slices) != len(frames) or [s.frame for s in slices] != list(range(len(frames))):
            return [Problem("load_slices-count", f"{len(slices)} slice(s) for {len(frames)} frame(s)")]
        return []
    failed = [s for s in slices if not s.ok]
    if len(failed) != 1 or slices[-1] is not failed[0]:
        return [Problem("load_slices-count", f"{len(slices)} slice(s), {len(failed)} failing, for a failed read")]
    if isinstance(error, InputError) and failed[0].reason != error.reason:
        return [Problem("load_slices-reason-differs", f"read_frames said {error.reason}, load_slices "
                                                      f"{failed[0].reason}: {failed[0].message}")]
    return []


def check_manifest(data: bytes) -> list[Problem]:
    """``Manifest.from_json`` on bytes and on text: a Manifest that round-trips, or ModelError."""
    from asinfer.engine import Manifest, ModelError

    problems = []
    for text in (data, data.decode("utf-8", "replace")):
        try:
            manifest = Manifest.from_json(text)
        except ModelError:
            continue
        except PASS_THROUGH:
            raise
        except BaseException as exc:  # noqa: BLE001
            problems.append(Problem.from_exception("manifest", exc))
            continue
        problems += _round_trip(manifest)
    return problems[:1]


def _round_trip(manifest) -> list[Problem]:
    from asinfer.engine import Manifest

    try:
        again = Manifest.from_json(manifest.to_json())
    except PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001
        return [Problem.from_exception("manifest-roundtrip", exc)]
    return [] if again == manifest else [Problem("manifest-roundtrip-differs", "from_json(m.to_json()) != m")]


# --- corpus ----------------------------------------------------------------------------------------------------------


def slug(key: str) -> str:
    """A problem key as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", key).strip("-")[:90]


@dataclass
class Corpus:
    """The folder failing inputs are kept in, at most ``keep`` per class (counting files already there)."""

    folder: Path
    keep: int = KEEP
    counts: dict[str, int] = field(default_factory=dict)

    def save(self, key: str, data: bytes, suffix: str) -> Path | None:
        name = slug(key)
        if name not in self.counts:
            self.counts[name] = sum(1 for p in self.folder.glob(f"{glob_escape(name)}-*") if _class_of(p) == name)
        if self.counts[name] >= self.keep:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}-{hashlib.sha256(data).hexdigest()[:8]}{suffix}"
        if not path.exists():
            path.write_bytes(data)
            self.counts[name] += 1
        return path


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _class_of(path: Path) -> str:
    """The class part of a corpus file name: everything before ``-<sha8>``."""
    return re.sub(r"-[0-9a-f]{8}$", "", path.name[: len(path.name) - len("".join(path.suffixes[-1:]))])


def corpus_files(folder: Path) -> list[Path]:
    """The inputs in a corpus folder (not its README)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != "README.md") if folder.is_dir() else []


def minimise(data: bytes, suffix: str, key: str, check: Callable[[bytes], list[Problem]], budget: int = 150) -> bytes:
    """A smaller input with the same problem class: cut halves, quarters, ... while the class stays."""
    size = len(data) // 2
    while size >= 1 and budget > 0:
        pos, shrunk = 0, False
        while pos < len(data) and budget > 0:
            candidate = data[:pos] + data[pos + size:]
            budget -= 1
            if any(p.key == key for p in check(candidate)):
                data, shrunk = candidate, True
            else:
                pos += size
        size = size if shrunk and size > len(data) // 2 else size // 2
    return data


# --- the long run: worker --------------------------------------------------------------------------------------------


class _Worker:
    """Generates, checks and saves in the child process; one line on stdout per input."""

    def __init__(self, args) -> None:
        self.args = args
        self.corpus = Corpus(Path(args.out), args.keep)
        self.work = Path(args.work)
        self.rng = random.Random(args.seed)
        self.samples = seeds()
        self.memory = MemoryGuard(args.memory_mb)
        self.deadline = time.monotonic() + args.seconds  # the warm-up counts: the parent's clock runs too

    def prepare(self) -> None:
        """Quiet the libraries, warm every decoder on the seeds, then cap the address space."""
        import logging
        import warnings

        warnings.simplefilter("ignore")
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
        logging.getLogger("asinfer").setLevel(logging.CRITICAL)
        for sample in self.samples:
            self.check(sample.data, sample.suffix)
            if sample.suffix != ".json":
                self._unreadable_seed(sample)
        self.memory.start()

    def _unreadable_seed(self, sample: Sample) -> None:
        """Tell the parent about a seed the engine refuses: mutants of it never reach its decoder."""
        from asinfer.engine import InputError, read_frames

        try:
            read_frames(self.work / f"input{sample.suffix}", max_pixels=self.args.max_pixels)
        except InputError as exc:
            print("? " + json.dumps({"seed": sample.name, "why": str(exc)[:160]}), flush=True)

    def check(self, data: bytes, suffix: str) -> list[Problem]:
        path = self.work / f"input{suffix}"
        path.write_bytes(data)
        print(f"> {path}", flush=True)
        return check_file(path, self.args.max_pixels)

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            sample = self.rng.choice(self.samples)
            data = mutate(sample.data, random_ops(self.rng, sample))
            self.one(data, sample.suffix)

    def one(self, data: bytes, suffix: str) -> None:
        start = time.monotonic()
        problems = self.check(data, suffix)
        elapsed = time.monotonic() - start
        print("=", flush=True)
        if elapsed > self.args.slow_s and not problems:
            problems = self._confirm_slow(data, suffix)
        problems = self.memory.problems() + problems
        for problem in problems[:1]:
            self.report(problem, data, suffix)
        if any("-memory" in p.key for p in problems):
            sys.stdout.flush()
            os._exit(_MEMORY_EXIT)  # the parent starts a fresh worker: a clean heap and peak-RSS mark

    def _confirm_slow(self, data: bytes, suffix: str) -> list[Problem]:
        """Time a slow input once more: on a shared machine one slow run may be someone else's load."""
        start = time.monotonic()
        self.check(data, suffix)
        elapsed = time.monotonic() - start
        return [Problem("read_frames-slow", f"{elapsed:.1f} s twice")] if elapsed > self.args.slow_s else []

    def report(self, problem: Problem, data: bytes, suffix: str) -> None:
        name = slug(problem.key)
        costly = "memory" in problem.key or "slow" in problem.key  # each try would take the budget again
        if self.corpus.counts.get(name, 0) < self.corpus.keep and not costly:
            data = minimise(data, suffix, problem.key, lambda d: self.check(d, suffix))
        path = self.corpus.save(problem.key, data, suffix)
        print("! " + json.dumps({"key": problem.key, "detail": problem.detail,
                                 "file": path.name if path else None}), flush=True)


class MemoryGuard:
    """Peak-RSS growth since :meth:`start`, and an address-space cap well above it.

    The cap (``ADDRESS_SPACE_FACTOR`` times the budget) is loose on purpose: an allocation
    larger than the budget but under the cap happens and shows as RSS growth (a tighter cap
    would turn it into a quiet decoder failure); one beyond the cap is a MemoryError.
    """

    def __init__(self, budget_mb: int) -> None:
        self.budget_mb = budget_mb
        self.baseline_kb = 0

    def start(self) -> None:
        import resource

        self.baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        vm = _vm_size_bytes()
        if vm:
            limit = vm + ADDRESS_SPACE_FACTOR * self.budget_mb * (1 << 20)
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))

    def problems(self) -> list[Problem]:
        """A ``memory-rss`` problem once the peak grew past the budget (the peak never falls: restart after it)."""
        import resource

        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.baseline_kb) / 1024
        if grown_mb <= self.budget_mb:
            return []
        return [Problem("read_frames-memory-rss", f"peak RSS grew {grown_mb:.0f} MiB (budget {self.budget_mb} MiB)")]


def _vm_size_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _run_atheris(worker: _Worker) -> None:
    """Let atheris drive: libFuzzer keeps inputs that reach new Python lines; mutations mix ours and its own."""
    import atheris

    suffixes = SUFFIXES

    def decode(data: bytes) -> tuple[str, bytes]:
        return (suffixes[data[0] % len(suffixes)], data[1:]) if data else ("", b"")

    def test_one(data: bytes) -> None:
        suffix, body = decode(data)
        worker.one(body, suffix)

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        suffix, body = decode(data)
        if not body or rng.random() < 0.05:
            sample = rng.choice(worker.samples)
            suffix, body = sample.suffix, sample.data
        if rng.random() < 0.4:
            body = atheris.Mutate(body, max(1, max_size - 1))
        else:
            body = mutate(body, random_ops(rng, Sample("", suffix, body)))
        return (bytes([suffixes.index(suffix)]) + body)[:max_size]

    corpus_in = worker.work / "atheris-corpus"
    corpus_in.mkdir(exist_ok=True)
    for sample in worker.samples:
        (corpus_in / slug(sample.name)).write_bytes(bytes([SUFFIXES.index(sample.suffix)]) + sample.data)
    remaining = max(1, int(worker.deadline - time.monotonic()))
    # Hangs, crashes and memory are the supervisor's: libFuzzer's own watchdogs are off (timeout=0 would not be).
    atheris.Setup([sys.argv[0], f"-max_total_time={remaining}", "-timeout=86400", "-rss_limit_mb=0",
                   f"-artifact_prefix={worker.work}/",
                   f"-max_len={1 << 20}", f"-seed={worker.args.seed}", str(corpus_in)],
                  test_one, custom_mutator=mutator)
    atheris.Fuzz()


def worker_main(args) -> None:
    worker = _Worker(args)
    if args.engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["pydicom", "asinfer"]):
            import pydicom  # noqa: F401

            import asinfer.engine  # noqa: F401
    worker.prepare()
    print("ready", flush=True)
    (_run_atheris if args.engine == "atheris" else _Worker.run)(worker)


# --- the long run: supervisor ----------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """What the supervisor saw: inputs checked, and per problem class its count, an example and its detail."""

    inputs: int = 0
    restarts: int = 0
    classes: dict[str, dict] = field(default_factory=dict)
    unreadable_seeds: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, detail: str, file: str | None) -> None:
        entry = self.classes.setdefault(key, {"count": 0, "file": None, "detail": detail})
        entry["count"] += 1
        entry["file"] = entry["file"] or file


class _Child:
    """One worker process and a thread reading its lines: the current input, counts, findings."""

    def __init__(self, command: list[str], tally: _Tally, log: Path) -> None:
        self.log = log
        with open(log, "wb") as err:  # faulthandler's stack of a native crash lands here
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                         preexec_fn=lambda: os.nice(5))
        self.tally, self.current, self.started = tally, None, None
        self.ready = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("> "):
                self.current, self.started = line[2:].rstrip("\n"), time.monotonic()
            elif line.startswith("="):
                self.started = None
                self.tally.inputs += 1
            elif line.startswith("! "):
                found = json.loads(line[2:])
                self.tally.add(found["key"], found["detail"], found["file"])
            elif line.startswith("? "):
                found = json.loads(line[2:])
                self.tally.unreadable_seeds[found["seed"]] = found["why"]
            elif line.startswith("ready"):
                self.ready = True

    def crash_detail(self) -> str:
        """The C++ ``what()`` or fatal error and the innermost Python frame, from the worker's stderr."""
        try:
            lines = self.log.read_bytes()[-20000:].decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        what = [ln.strip() for i, ln in enumerate(lines) if "what()" in ln or "Fatal Python error" in ln
                or (i and "what()" in lines[i - 1])]
        where = next((ln.strip() for i, ln in enumerate(lines) if i and "most recent call first" in lines[i - 1]), "")
        return " ".join([*what[:3], where])[:400]

    def stuck(self, timeout_s: float) -> bool:
        started = self.started
        return self.ready and started is not None and time.monotonic() - started > timeout_s


def supervise(args) -> _Tally:
    """Run workers until ``args.seconds`` is spent, restarting them after a hang, crash or memory blow-up."""
    tally, corpus = _Tally(), Corpus(Path(args.out), args.keep)
    end = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory(prefix="asinfer-fuzz-", dir=_fast_tmp()) as work:
        while time.monotonic() < end - 2:
            command = [sys.executable, "-X", "faulthandler", os.path.abspath(__file__), "--worker", "--work", work,
                       "--seed", str(args.seed + tally.restarts), "--seconds", str(int(end - time.monotonic())),
                       *_pass_on(args)]
            child = _Child(command, tally, Path(work, "worker.log"))
            _watch(child, args, end, tally, corpus)
            tally.restarts += 1
    return tally


def _watch(child: _Child, args, end: float, tally: _Tally, corpus: Corpus) -> None:
    while child.proc.poll() is None:
        if child.stuck(args.timeout_s) or time.monotonic() > end + 60:
            child.proc.kill()
            child.proc.wait()
            child.thread.join(5)
            if time.monotonic() <= end + 60:
                _save_current(child, "read_frames-hang", f"no result after {args.timeout_s:g} s", tally, corpus)
            return
        time.sleep(0.2)
    child.thread.join(5)
    code = child.proc.returncode
    if code < 0 and child.started is not None:
        name = signal.Signals(-code).name
        _save_current(child, f"read_frames-crash-{name}", f"killed by {name}: {child.crash_detail()}", tally, corpus)
    elif code not in (0, _MEMORY_EXIT) and child.started is not None:
        _save_current(child, f"read_frames-exit-{code}", f"worker exited with {code}: {child.crash_detail()}",
                      tally, corpus)


def _save_current(child: _Child, key: str, detail: str, tally: _Tally, corpus: Corpus) -> None:
    path = Path(child.current) if child.current else None
    if path is None or not path.exists():
        tally.add(key, detail, None)
        return
    if path.suffix == ".json":
        key = key.replace("read_frames", "manifest")
    saved = corpus.save(key, path.read_bytes(), path.suffix)
    tally.add(key, detail, saved.name if saved else None)
    tally.inputs += 1


def _fast_tmp() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _pass_on(args) -> list[str]:
    return ["--out", str(args.out), "--keep", str(args.keep), "--max-pixels", str(args.max_pixels),
            "--memory-mb", str(args.memory_mb), "--slow-s", str(args.slow_s), "--engine", args.engine]


def render(tally: _Tally, seconds: float) -> str:
    """The summary: inputs, rate, and one line per problem class with its example file."""
    lines = [f"inputs checked: {tally.inputs} in {seconds:.0f} s ({tally.inputs / max(seconds, 1e-9):.1f}/s), "
             f"worker restarts: {tally.restarts - 1}", f"problem classes: {len(tally.classes)}"]
    for key, entry in sorted(tally.classes.items(), key=lambda kv: -kv[1]["count"]):
        lines.append(f"  {entry['count']:6d}  {key}\n          e.g. {entry['file']}\n          {entry['detail']}")
    if tally.unreadable_seeds:
        lines.append("seeds the engine refused (their decoders were not fuzzed):")
        lines += [f"  {name}: {why}" for name, why in sorted(tally.unreadable_seeds.items())]
    return "\n".join(lines)


# --- replay ----------------------------------------------------------------------------------------------------------

_DONE = "done "


def replay(paths: list[Path], args) -> int:
    """Check saved inputs in this process under the worker's memory cap; print each one's problems; 1 if any."""
    import warnings

    import cv2  # noqa: F401 - imported before the baseline: the libraries are not the input's memory
    import pydicom  # noqa: F401

    warnings.simplefilter("ignore")
    memory = MemoryGuard(args.memory_mb)
    memory.start()
    failed = 0
    for path in paths:
        print(f"> {path}", flush=True)
        start = time.monotonic()
        try:
            with deadline(args.timeout_s):
                problems = check_file(path, args.max_pixels)
        except Deadline as exc:
            problems = [Problem("hang", str(exc))]
        if not problems and time.monotonic() - start > args.slow_s:
            problems = [Problem("slow", f"{time.monotonic() - start:.1f} s (limit {args.slow_s:g} s)")]
        problems = memory.problems() + problems
        for problem in problems:
            print(f"{problem.key}: {problem.detail}", flush=True)
        failed += bool(problems)
        print(f"{_DONE}{path}", flush=True)
        if any("-memory" in p.key for p in problems):
            return _MEMORY_EXIT  # the peak-RSS mark never falls: a fresh process measures the next input
    return 1 if failed else 0


def replay_isolated(paths: list[Path], timeout_s: float = 30.0,
                    max_pixels: int = FUZZ_MAX_PIXELS) -> dict[Path, list[str]]:
    """:func:`replay` in child processes: a hang, crash or blow-up is reported against its input, not suffered.

    One child checks the inputs in turn; after a crash or a hang it is replaced for the inputs left.

    Returns:
        Each input's problem lines (empty: it keeps the contract).
    """
    results: dict[Path, list[str]] = {}
    left = list(paths)
    while left:
        lines, error = _replay_child(left, timeout_s, max_pixels)
        current = None
        for line in lines:
            if line.startswith("> "):
                current = Path(line[2:])
                results[current] = []
            elif line.startswith(_DONE):
                current = None
            elif current is not None:
                results[current].append(line)
        if error and current is not None:
            results[current].append(error)
        left = [p for p in left if p not in results]
        if error and current is None:  # died before its first input: report it against all
            results.update({p: [error] for p in left})
            left = []
    return results


def _replay_child(paths: list[Path], timeout_s: float, max_pixels: int) -> tuple[list[str], str | None]:
    """Lines a replay child printed, and why it stopped early (None: it finished)."""
    command = [sys.executable, "-X", "faulthandler", os.path.abspath(__file__), "--max-pixels", str(max_pixels),
               "--timeout-s", str(timeout_s), "--replay-child", *map(str, paths)]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)
        try:
            code = proc.wait(timeout=2 * timeout_s + 3 * len(paths))  # Python-level hangs stop at timeout_s
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        out.seek(0)
        lines = out.read().decode("utf-8", "replace").splitlines()
    if code is None:
        return lines, "hang: the replay ran out of time on this input"
    if code < 0:
        return lines, f"crash: killed by {signal.Signals(-code).name}"
    return lines, None if code in (0, 1, _MEMORY_EXIT) else f"exit {code}"


# --- command line ----------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m asinfer.benchmarks.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="wall time of the run (default 600)")
    parser.add_argument("--out", type=Path, default=Path("tests/data/fuzz-corpus"), help="corpus folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("mutate", "atheris"), default="mutate",
                        help="mutate: our seeded mutation loop; atheris: coverage-guided (pip install atheris)")
    parser.add_argument("--keep", type=int, default=KEEP, help="inputs kept per problem class")
    parser.add_argument("--max-pixels", type=int, default=FUZZ_MAX_PIXELS)
    parser.add_argument("--timeout-s", type=float, default=TIMEOUT_S, help="an input running longer is a hang")
    parser.add_argument("--slow-s", type=float, default=SLOW_S, help="an input running longer is reported as slow")
    parser.add_argument("--memory-mb", type=int, default=MEMORY_MB, help="peak RSS growth allowed per input")
    parser.add_argument("--replay", type=Path, nargs="+", help="check saved inputs (each hang, crash or "
                        "blow-up isolated in a child process) and print their problems")
    parser.add_argument("--replay-child", type=Path, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.replay_child:
        sys.exit(replay(args.replay_child, args))
    if args.replay:
        results = replay_isolated(args.replay, args.timeout_s, args.max_pixels)
        for path, lines in results.items():
            print(f"{path}: {' | '.join(lines) if lines else 'ok'}")
        sys.exit(1 if any(results.values()) else 0)
    if args.worker:
        worker_main(args)
        return
    start = time.monotonic()
    tally = supervise(args)
    print(render(tally, time.monotonic() - start))


if __name__ == "__main__":
    main()
