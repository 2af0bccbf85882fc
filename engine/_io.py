"""Reading images: DICOM (by content), PNG, JPEG and TIFF into 2-D frames.

Readers return :class:`Frame` objects holding the pixels as stored (after the
DICOM modality LUT) plus what is needed to map them to 8 bit later; the
mapping itself is preprocessing (``asinfer.engine.Preprocessor``). Every expected
failure is raised as :class:`asinfer.engine.InputError` with a one-line reason.
No identifying DICOM attribute is copied into a frame.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ._errors import InputError

#: Pixel-count limit per file (all frames together): a guard against
#: decompression bombs. 2**28 is 16 frames of 4096x4096, far beyond any MR series.
MAX_PIXELS = 1 << 28

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}

_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}

# Transfer syntaxes the base install cannot decode, with the plugin that can.
_DECODER_HINTS = {
    "1.2.840.10008.1.2.4.51": "12-bit JPEG Extended needs pylibjpeg-libjpeg (GPLv3): pip install pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.201": "HTJ2K needs pylibjpeg-openjpeg>=2.4: pip install -U pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "HTJ2K needs pylibjpeg-openjpeg>=2.4: pip install -U pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "HTJ2K needs pylibjpeg-openjpeg>=2.4: pip install -U pylibjpeg-openjpeg",
}
_DEFAULT_HINT = "install a pydicom decoder plugin for it (python-gdcm, pylibjpeg-libjpeg, pylibjpeg-openjpeg or pyjpegls)"


@dataclass
class Frame:
    """One 2-D slice read from a source.

    Attributes:
        pixels: ``(H, W)`` grey array as stored, after the DICOM modality LUT
            (uint8, uint16, int16, float32...). Colour inputs are already grey.
        source: the path (or ``<array N>``) it came from.
        index: frame number within the source (0 for single images).
        window: DICOM VOI window ``(center, width)`` or None.
        invert: True for MONOCHROME1 (display inverts after windowing).
        info: non-identifying facts (format, modality, transfer syntax...).
    """

    pixels: np.ndarray
    source: str
    index: int = 0
    window: tuple[float, float] | None = None
    invert: bool = False
    info: dict[str, Any] = field(default_factory=dict)


def read_frames(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> list[Frame]:
    """Read every frame of one file.

    Args:
        path: a DICOM file (recognised by content) or a PNG/JPEG/TIFF image.
        max_pixels: refuse files holding more pixels than this.

    Returns:
        One frame per slice: several for a multi-frame DICOM object.

    Raises:
        InputError: with a reason from ``asinfer.engine.REASONS``.

    Example:
        >>> frames = read_frames("series/IM0001.dcm")  # doctest: +SKIP
        >>> frames[0].pixels.shape
        (512, 512)
    """
    path = Path(path)
    kind = sniff(_read_bytes(path, 132), path.suffix)
    if kind == "dicom":
        return _read_dicom(path, max_pixels)
    if kind is None:
        raise InputError("not-an-image", f"{path.name} is neither DICOM nor PNG/JPEG/TIFF")
    return [_decode_image(_read_bytes(path), kind, str(path), max_pixels)]


def sniff(data: bytes, suffix: str = "") -> str | None:
    """The format of a file from its first bytes: dicom, png, jpeg, tiff or None."""
    if data[128:132] == b"DICM":
        return "dicom"
    for magic, kind in _SIGNATURES.items():
        if data.startswith(magic):
            return kind
    if suffix.lower() in DICOM_SUFFIXES:  # DICOM without the Part 10 preamble
        return "dicom"
    return None


def iter_files(root: Path) -> Iterator[Path]:
    """Files under ``root``, recursively, sorted, that look like images.

    Files whose content is DICOM or a known image signature are yielded
    whatever their name; other files (notes, CSVs, DICOMDIR indexes) are not.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not name.startswith(".") and name.upper() != "DICOMDIR" and _looks_like_image(path):
                yield path


def _looks_like_image(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES | DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return True  # let the reader report why it cannot be read
    return sniff(head) is not None


def _read_bytes(path: Path, size: int = -1) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except FileNotFoundError:
        raise InputError("not-found", f"{path} does not exist") from None
    except IsADirectoryError:
        raise InputError("unreadable", f"{path} is a directory") from None
    except OSError as exc:
        raise InputError("unreadable", f"cannot read {path}: {exc.strerror or exc}") from None


# --- PNG / JPEG / TIFF -------------------------------------------------------

def _decode_image(data: bytes, kind: str, source: str, max_pixels: int) -> Frame:
    import cv2

    size = image_size(data, kind)
    if size and size[0] * size[1] > max_pixels:
        raise InputError("too-large", f"{size[0]}x{size[1]} pixels exceeds the limit of {max_pixels}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError("truncated", f"{kind.upper()} data is truncated or corrupt")
    return Frame(_to_grey(img, "BGR"), source, info={"format": kind, "dtype": str(img.dtype)})


def _to_grey(img: np.ndarray, order: str) -> np.ndarray:
    """(H, W[, C]) -> (H, W); colour converted with ITU-R BT.601 weights."""
    import cv2

    if img.ndim == 2:
        return img
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise InputError("unsupported-image", f"pixel array of shape {img.shape} is not grey, RGB or RGBA")
    if img.shape[2] == 1:
        return img[:, :, 0]
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        img = img.astype(np.float32)
    code = {("BGR", 3): cv2.COLOR_BGR2GRAY, ("BGR", 4): cv2.COLOR_BGRA2GRAY,
            ("RGB", 3): cv2.COLOR_RGB2GRAY, ("RGB", 4): cv2.COLOR_RGBA2GRAY}[order, img.shape[2]]
    return cv2.cvtColor(img, code)


def image_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or TIFF header without decoding it."""
    try:
        if kind == "png" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if kind == "jpeg":
            return _jpeg_size(data)
        if kind == "tiff":
            return _tiff_size(data)
    except (struct.error, IndexError):
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        pos += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    end = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", data[4:8])
    (count,) = struct.unpack(end + "H", data[ifd:ifd + 2])
    dims = {}
    for i in range(count):
        tag, typ, _, value = struct.unpack(end + "HHI4s", data[ifd + 2 + 12 * i: ifd + 14 + 12 * i])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            fmt = end + ("H" if typ == 3 else "I")
            dims[tag] = struct.unpack(fmt, value[:struct.calcsize(fmt)])[0]
    return (dims[256], dims[257]) if len(dims) == 2 else None


# --- DICOM -------------------------------------------------------------------

def _read_dicom(path: Path, max_pixels: int) -> list[Frame]:
    ds = _dicom_dataset(path)
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    frames = int(ds.get("NumberOfFrames") or 1)
    if rows * cols * frames > max_pixels:
        raise InputError("too-large", f"{frames} frame(s) of {cols}x{rows} pixels exceeds the limit of {max_pixels}")
    pixels = _dicom_pixels(ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    stack = _dicom_stack(pixels, frames, photometric)
    grey = photometric.startswith("MONOCHROME")
    if grey:
        stack = _modality_lut(stack, ds)
    info = {
        "format": "dicom",
        "modality": str(ds.get("Modality", "")),
        "transfer_syntax": _transfer_syntax_name(ds),
        "photometric": photometric,
        "bits_stored": int(ds.get("BitsStored") or 0),
    }
    window = _voi_window(ds) if grey else None
    invert = photometric == "MONOCHROME1"
    return [Frame(_native(img), str(path), i, window, invert, dict(info)) for i, img in enumerate(stack)]


def _native(img: np.ndarray) -> np.ndarray:
    """Contiguous, native byte order (big-endian DICOM decodes to '>i2')."""
    return np.ascontiguousarray(img, dtype=img.dtype.newbyteorder("="))


def _dicom_dataset(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, force=path.suffix.lower() in DICOM_SUFFIXES)
    except InvalidDicomError as exc:
        raise InputError("not-an-image", f"not a DICOM file: {exc}") from None
    except (EOFError, struct.error) as exc:
        raise InputError("truncated", f"DICOM header ends early ({type(exc).__name__})") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as exc:
        raise InputError("unreadable", f"DICOM header could not be parsed: {_one_line(exc)}") from None
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
        raise InputError("no-pixel-data", f"DICOM object has no pixel data ({sop})")
    return ds


def _dicom_pixels(ds) -> np.ndarray:
    tsyntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    try:
        return ds.pixel_array
    except (RuntimeError, NotImplementedError) as exc:
        if "decode" in str(exc).lower() or "support" in str(exc).lower():
            name = getattr(tsyntax, "name", str(tsyntax))
            hint = _DECODER_HINTS.get(str(tsyntax), _DEFAULT_HINT)
            raise InputError("unsupported-compression", f"cannot decode '{name}': {hint}") from None
        raise InputError("unreadable", f"pixel data could not be decoded: {_one_line(exc)}") from None
    except ValueError as exc:
        if "less than expected" in str(exc) or "truncat" in str(exc).lower():
            raise InputError("truncated", "DICOM pixel data is shorter than its header says") from None
        raise InputError("unreadable", f"pixel data could not be decoded: {_one_line(exc)}") from None
    except (AttributeError, KeyError, TypeError, EOFError, struct.error) as exc:
        raise InputError("unreadable", f"pixel data could not be decoded: {_one_line(exc)}") from None


def _dicom_stack(pixels: np.ndarray, frames: int, photometric: str) -> Iterable[np.ndarray]:
    """(frames, H, W) grey from pydicom's array, whatever its layout."""
    colour = pixels.ndim == (4 if frames > 1 else 3)
    if frames == 1:
        pixels = pixels[None]
    if photometric == "PALETTE COLOR":
        return pixels  # palette indices; the preprocessing stretch handles them as grey
    if colour:
        # pydicom converts YBR to RGB by default
        return [_to_grey(p, "RGB") for p in pixels]
    return pixels


def _modality_lut(stack, ds) -> list[np.ndarray]:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1 and intercept == 0:
        return list(stack)
    return [(np.asarray(img, np.float32) * slope + intercept) for img in stack]


def _voi_window(ds) -> tuple[float, float] | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    # Multi-valued: the first window is the one the modality recommends.
    center = center[0] if _is_multi(center) else center
    width = width[0] if _is_multi(width) else width
    try:
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        return None
    return (center, width) if width >= 1 else None


def _transfer_syntax_name(ds) -> str:
    uid = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    return getattr(uid, "name", str(uid or ""))


def _is_multi(value) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__
