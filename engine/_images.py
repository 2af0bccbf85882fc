"""PNG, JPEG and TIFF: the size from the file structure first, then the decode.

Every dimension is read from the file's own structure before a pixel is
allocated: PNG's IHDR, JPEG's SOF (fill bytes skipped, as decoders do),
every TIFF IFD (duplicate tags counted at their largest, page chains with a
loop stopped). A header that gives no size is refused rather than decoded
blind: a 334-byte JPEG must not become a 30000x30000 allocation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ._errors import InputError

MAX_PAGES = 4096  # TIFF pages read per file; a longer IFD chain is refused


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's structure says it decodes to."""

    width: int
    height: int
    channels: int  # samples per pixel after decoding (palette PNG decodes to 3)
    bytes_per_sample: int
    pages: int = 1
    pixels: int = 0  # all pages together
    nbytes: int = 0  # decoded bytes, all pages together


def image_header(data: bytes, kind: str) -> ImageHeader:
    """The decoded size of a PNG, JPEG or TIFF, from its structure alone.

    Raises:
        InputError: ``truncated`` when the file ends inside its header,
            ``unsupported-image`` when the header gives no usable size.
    """
    try:
        header = _HEADERS[kind](data)
    except (struct.error, IndexError):
        raise InputError("truncated", f"{kind.upper()} header ends early") from None
    if header is None or header.width <= 0 or header.height <= 0:
        raise InputError("unsupported-image", f"the {kind.upper()} header gives no usable image size; "
                                              f"refusing to decode it blind")
    return header


def _sized(width: int, height: int, channels: int, nbytes: int, pages: int = 1,
           pixels: int | None = None, total: int | None = None) -> ImageHeader:
    one = width * height
    return ImageHeader(width, height, channels, nbytes, pages, pixels if pixels is not None else one,
                       total if total is not None else one * channels * nbytes)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # colour type -> channels OpenCV decodes to


def _png(data: bytes) -> ImageHeader | None:
    if data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_CHANNELS:
        return None
    _check_png_chunks(data)
    return _sized(width, height, _PNG_CHANNELS[colour], 2 if depth == 16 else 1)


def _check_png_chunks(data: bytes) -> None:
    """Every chunk must fit in the file: libpng allocates a chunk's declared length before reading it
    (a 73-byte PNG declaring a 512 MB chunk took 0.5 GB)."""
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if pos + 12 + length > len(data):
            raise InputError("truncated", f"PNG chunk {kind!r} declares {length:,} bytes, past the end of the file")
        if kind == b"IEND":
            return
        pos += 12 + length


# SOF markers: baseline/extended/progressive/lossless (C0-CF except DHT C4, JPG C8, DAC CC) and JPEG-LS (F7)
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
_NO_LENGTH = frozenset({0xD8, 0x01}) | frozenset(range(0xD0, 0xD8))  # SOI, TEM, RSTn


def jpeg_sof(data: bytes, start: int = 0) -> tuple[int, int, int, int] | None:
    """(width, height, components, precision) of a JPEG or JPEG-LS codestream's frame header.

    Markers may be preceded by any number of 0xFF fill bytes (ITU T.81 B.1.1.2).
    """
    pos = start
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return None
        while pos + 1 < len(data) and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos + 1]
        if marker in _NO_LENGTH:
            pos += 2
            continue
        if marker == 0xD9:  # EOI before any frame header
            return None
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in SOF_MARKERS:
            precision, height, width, components = struct.unpack(">BHHB", data[pos + 4:pos + 10])
            return width, height, components, precision
        if length < 2:
            return None
        pos += 2 + length
    return None


def _jpeg(data: bytes) -> ImageHeader | None:
    found = jpeg_sof(data)
    if found is None:
        return None
    width, height, components, precision = found
    return _sized(width, height, 1 if components == 1 else 3, 2 if precision > 8 else 1)


def _tiff(data: bytes) -> ImageHeader | None:
    end = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(end + "I", data[4:8])
    pages, seen, pixels, total, first = 0, set(), 0, 0, None
    while offset and offset not in seen:
        if len(seen) >= MAX_PAGES:
            raise InputError("unsupported-image", f"TIFF has more than {MAX_PAGES} pages")
        seen.add(offset)
        page, offset = _tiff_page(data, offset, end)
        if page is None:
            return None
        width, height, channels, nbytes = page
        first = first or page
        pages += 1
        pixels += width * height
        total += width * height * channels * nbytes
    if first is None:
        return None
    width, height, channels, nbytes = first
    return _sized(width, height, channels, nbytes, pages, pixels, total)


_WIDTH, _LENGTH, _BITS, _SAMPLES = 256, 257, 258, 277
_TYPE_SIZE = {3: 2, 4: 4}  # SHORT, LONG


def _tiff_page(data: bytes, offset: int, end: str) -> tuple[tuple[int, int, int, int] | None, int]:
    """One IFD: ((width, height, samples, bytes per sample) or None, next IFD offset)."""
    (count,) = struct.unpack(end + "H", data[offset:offset + 2])
    found: dict[int, int] = {}
    for i in range(count):
        entry = data[offset + 2 + 12 * i: offset + 14 + 12 * i]
        tag, kind, n, raw = struct.unpack(end + "HHI4s", entry)
        if tag in (_WIDTH, _LENGTH, _BITS, _SAMPLES) and kind in (3, 4) and 1 <= n <= 16:
            size = _TYPE_SIZE[kind]
            if n * size <= 4:
                values = raw[:n * size]
            else:  # stored elsewhere: the field holds the offset
                (where,) = struct.unpack(end + "I", raw)
                values = data[where:where + n * size]
            if len(values) != n * size:
                raise IndexError("TIFF tag values past the end of the file")
            value = max(struct.unpack(end + ("H" if kind == 3 else "I") * n, values))
            found[tag] = max(found.get(tag, 0), value)  # a repeated tag counts at its largest
    (following,) = struct.unpack(end + "I", data[offset + 2 + 12 * count: offset + 6 + 12 * count])
    if _WIDTH not in found or _LENGTH not in found:
        return None, following
    nbytes = max(1, (found.get(_BITS, 8) + 7) // 8)
    return (found[_WIDTH], found[_LENGTH], found.get(_SAMPLES, 1), nbytes), following


_HEADERS = {"png": _png, "jpeg": _jpeg, "tiff": _tiff}


def quiet_cv2():
    """OpenCV with its own log silenced: a bad PNG must not print warnings (with file details) to stderr."""
    import cv2

    try:
        from cv2.utils import logging as cv_log

        cv_log.setLogLevel(cv_log.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):  # builds without the logging API
        pass
    return cv2


def decode_image(data: bytes, kind: str, header: ImageHeader) -> list[np.ndarray]:
    """Decode every page, checking each against the header it was sized by.

    Raises:
        InputError: ``truncated`` when the decoder gives nothing (cut or damaged data),
            ``corrupt-pixel-data`` when it gives another size than the header.
    """
    cv2 = quiet_cv2()
    buffer = np.frombuffer(data, np.uint8)
    try:
        if kind == "tiff" and header.pages > 1:
            ok, pages = cv2.imdecodemulti(buffer, cv2.IMREAD_UNCHANGED)
            pages = list(pages) if ok else []
        else:
            image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
            pages = [] if image is None or image.size == 0 else [image]
    except cv2.error as exc:  # OpenCV raises for layouts it refuses (TIFF photometric, channel counts)
        raise InputError("unsupported-image", f"{kind.upper()} could not be decoded: "
                                              f"{' '.join(str(exc).split())[-160:]}") from None
    if not pages:
        raise InputError("truncated", f"{kind.upper()} data is truncated or damaged: the decoder gave no image")
    pixels = sum(p.shape[0] * p.shape[1] for p in pages)
    if pixels > header.pixels:
        raise InputError("corrupt-pixel-data", f"{kind.upper()} decoded to {pixels} pixels, its header "
                                               f"says {header.pixels}")
    return pages
