"""Reading images: DICOM (by content), PNG, JPEG and TIFF into 2-D frames, within limits.

Readers return :class:`Frame` objects holding the pixels as stored plus what
is needed to map them to 8 bit later (DICOM rescale, VOI window,
MONOCHROME1); the mapping itself is preprocessing
(``asinfer.engine.Preprocessor``). Every expected failure is raised as
:class:`asinfer.engine.InputError` with a one-line reason. No identifying
DICOM attribute is copied into a frame.

Hostile files are expected. Nothing is opened that is not a regular file (a
FIFO would block forever), every size is read from the file's structure and
checked against :class:`ReadLimits` before a pixel is allocated, and
multi-frame files are decoded a frame at a time (:func:`open_reader`).
Folder walks (:func:`walk`) are iterative, follow symbolic links with loop
detection, find DICOM by content, and report every entry they pass over.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ._errors import InputError
from ._series import SliceIdentity

#: Pixel-count limit per file (all frames together): a guard against
#: decompression bombs. 2**28 is 16 frames of 4096x4096, far beyond any MR series.
MAX_PIXELS = 1 << 28
#: Decoded bytes one input may hold at once: a DICOM frame (frames stream one at
#: a time) or a whole PNG/JPEG/TIFF. 256 MB is a 11585x11585 16-bit frame, 64x
#: the largest MR slice; an RGBA16 PNG inside the pixel limit (2 GB decoded) is
#: what it refuses. Peak memory of one input is about 3.5x this, plus the runtime.
MAX_BYTES = 256 << 20

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}

_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}
# Explicit-VR codes: a dataset without the Part 10 preamble starts with a tag and one of these.
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
        b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
        b"UR", b"US", b"UT", b"UV"}


@dataclass(frozen=True)
class ReadLimits:
    """How much one input may hold: the decompression-bomb and memory guard.

    Attributes:
        max_pixels: pixels per file, all frames or pages together (bounds the
            work, and what a compressed stream may expand to).
        max_bytes: decoded bytes held at once for one input: one DICOM frame
            (frames are decoded one at a time), or a whole PNG/JPEG/TIFF
            (decoded at once, every channel and page counted).
    """

    max_pixels: int = MAX_PIXELS
    max_bytes: int = MAX_BYTES

    def check(self, what: str, width: int, height: int, frames: int = 1, bytes_per_pixel: int = 1,
              held: int = 1) -> int:
        """The decoded size in bytes of ``frames`` images of ``width`` x ``height``, if within the limits.

        ``held`` is how many of the frames are in memory at once.

        Raises:
            InputError: ``too-large`` naming the limit that was passed.
        """
        pixels = width * height * frames
        if pixels > self.max_pixels:
            shape = f"{frames} frame(s) of {width}x{height}" if frames > 1 or what == "DICOM" else f"{width}x{height}"
            raise InputError("too-large", f"{shape} pixels exceeds the limit of {self.max_pixels}")
        nbytes = width * height * held * bytes_per_pixel
        if nbytes > self.max_bytes:
            raise InputError("too-large", f"{what} decodes to {nbytes:,} bytes at once, over the memory limit of "
                                          f"{self.max_bytes:,} (--max-memory)")
        return pixels * bytes_per_pixel


@dataclass
class Frame:
    """One 2-D slice read from a source.

    Attributes:
        pixels: ``(H, W)`` grey array as stored (uint8, uint16, int16,
            float32...). Colour inputs are already grey. The DICOM modality
            LUT is not applied here but in preprocessing (``rescale``), so a
            16-bit frame is never copied to float.
        source: the path (or ``<array N>``) it came from.
        index: frame number within the source (0 for single images).
        window: DICOM VOI window ``(center, width)`` or None.
        invert: True for MONOCHROME1 (display inverts after windowing).
        info: non-identifying facts (format, modality, transfer syntax...).
        rescale: DICOM modality LUT ``(slope, intercept)``: values are
            ``pixels * slope + intercept``.
        identity: the DICOM series, study, instance and position this frame
            belongs to (:class:`SliceIdentity`); None for other images.
    """

    pixels: np.ndarray
    source: str
    index: int = 0
    window: tuple[float, float] | None = None
    invert: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    rescale: tuple[float, float] = (1.0, 0.0)
    identity: SliceIdentity | None = None


class Reader:
    """One input, its header read and checked: :attr:`count` frames of :attr:`nbytes` decoded bytes.

    Made by :func:`open_reader`; :meth:`frames` decodes and yields them (once).
    """

    def __init__(self, source: str, count: int, nbytes: int, frames: Callable[[], Iterator[Frame]],
                 identity: SliceIdentity | None = None) -> None:
        self.source, self.count, self.nbytes, self.identity = source, count, nbytes, identity
        self._frames = frames

    def frames(self) -> Iterator[Frame]:
        """The frames, decoded as they are taken.

        Raises:
            InputError: while decoding, for the frame that failed.
        """
        return self._frames()


def read_frames(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> list[Frame]:
    """Read every frame of one file.

    Args:
        path: a DICOM file (recognised by content) or a PNG/JPEG/TIFF image.
        max_pixels: refuse files holding more pixels than this.
        max_bytes: refuse files decoding to more bytes than this.

    Returns:
        One frame per slice: several for a multi-frame DICOM object or a
        multi-page TIFF.

    Raises:
        InputError: with a reason from ``asinfer.engine.REASONS``.

    Example:
        >>> frames = read_frames("series/IM0001.dcm")  # doctest: +SKIP
        >>> frames[0].pixels.shape
        (512, 512)
    """
    return list(open_reader(Path(path), ReadLimits(max_pixels, max_bytes)).frames())


def open_reader(path: Path, limits: ReadLimits = ReadLimits()) -> Reader:
    """Check what ``path`` is and what its header says, without decoding a pixel.

    Raises:
        InputError: not a regular file, unreadable, not an image, or over the limits.
    """
    size = regular_file_size(path)
    if size == 0:
        raise InputError("empty", f"{path.name} is a 0-byte file")
    kind = sniff(_read_bytes(path, 132), path.suffix)
    if kind == "dicom":
        return _dicom_reader(path, limits)
    if kind is None:
        raise InputError("not-an-image", f"{path.name} is neither DICOM nor PNG/JPEG/TIFF")
    return _image_reader(path, kind, size, limits)


def regular_file_size(path: Path) -> int:
    """The size of ``path`` if it is a regular file (links followed), without opening it.

    Raises:
        InputError: ``not-found``, ``unreadable`` (a folder, a permission or I/O
            error) or ``not-a-file`` (FIFO, device, socket: opening one can block).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError("not-found", f"{path} does not exist" + (" (a broken link)" if os.path.islink(path) else "")
                         ) from None
    except OSError as exc:
        raise InputError("unreadable", f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError("unreadable", f"{path} is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise InputError("not-a-file", f"{path} is a {_kind_of(st.st_mode)}, not a regular file; it was not opened")
    return st.st_size


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def sniff(data: bytes, suffix: str = "") -> str | None:
    """The format of a file from its first bytes: dicom, png, jpeg, tiff or None."""
    if data[128:132] == b"DICM":
        return "dicom"
    for magic, kind in _SIGNATURES.items():
        if data.startswith(magic):
            return kind
    if suffix.lower() in DICOM_SUFFIXES or _bare_dataset(data):  # DICOM without the Part 10 preamble
        return "dicom"
    return None


def _bare_dataset(data: bytes) -> bool:
    """A DICOM dataset written without preamble: a group 0002/0008 tag, then a VR (explicit) or a length."""
    if len(data) < 8:
        return False
    group, element = struct.unpack("<HH", data[:4])
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    if data[4:6] in _VRS:
        return True
    (length,) = struct.unpack("<I", data[4:8])  # implicit VR: a 32-bit length, small for the first elements
    return 0 < length <= 1024


def walk(root: Path, on_skip: Callable[[str, str], None] | None = None) -> Iterator[Path | tuple[Path, InputError]]:
    """Every candidate image under ``root``, folders in sorted order, without recursion.

    Symbolic links are followed; a folder seen before (a link loop) is passed
    over. Regular files are yielded when their name or content says image
    or DICOM; FIFOs, devices and sockets are yielded unopened (their reader
    says ``not-a-file``). A folder that cannot be listed is yielded as
    ``(folder, InputError)``. Everything passed over on purpose (hidden
    entries, DICOMDIR indexes, files that are no image, link loops) is
    reported to ``on_skip(path, why)``.
    """
    skip = on_skip or (lambda path, why: None)
    stack, seen, files = [Path(root)], set(), set()
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            key = (st.st_dev, st.st_ino)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield folder, InputError("unreadable", f"cannot list folder {folder}: {exc.strerror or exc}")
            continue
        if key in seen:
            skip(str(folder), "folder seen before (a link loop)")
            continue
        seen.add(key)
        folders = []
        for entry in entries:
            path = Path(entry.path)
            why = _skip_reason(entry)
            if why:
                skip(str(path), why)
            elif _is_dir(entry):
                folders.append(path)
            elif _seen_file(path, files):
                skip(str(path), "file seen before (another link to it)")
            elif _is_candidate(path):
                yield path
            else:
                skip(str(path), "not an image or DICOM file")
        stack.extend(reversed(folders))


def _skip_reason(entry: os.DirEntry) -> str | None:
    if entry.name.startswith("."):
        return "hidden"
    if entry.name.upper() == "DICOMDIR":
        return "DICOMDIR index"
    return None


def _seen_file(path: Path, seen: set) -> bool:
    """True when this file (by device and inode, links followed) was met before in the walk; else remember it."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return True
    seen.add(key)
    return False


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False  # the reader will say what is wrong with it


def iter_files(root: Path, on_skip: Callable[[str, str], None] | None = None) -> Iterator[Path]:
    """Files under ``root`` that look like images or DICOM (see :func:`walk`), sorted per folder.

    Folders that cannot be listed are reported to ``on_skip`` instead of yielded.
    """
    skip = on_skip or (lambda path, why: None)
    for item in walk(root, skip):
        if isinstance(item, tuple):
            skip(str(item[0]), item[1].message)
        else:
            yield item


def _is_candidate(path: Path) -> bool:
    """An image or DICOM by name or content; anything that is not a regular file too (never opened)."""
    try:
        st = os.stat(path)
    except OSError:
        return True  # the reader will say why
    if not stat.S_ISREG(st.st_mode):
        return True
    if path.suffix.lower() in IMAGE_SUFFIXES | DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return True
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


# --- readers -------------------------------------------------------------------------------------------------


def _image_reader(path: Path, kind: str, size: int, limits: ReadLimits) -> Reader:
    from ._images import decode_image, image_header

    if size > limits.max_bytes:
        raise InputError("too-large", f"{kind.upper()} file of {size:,} bytes is over the memory limit of "
                                      f"{limits.max_bytes:,} (--max-memory)")
    data = _read_bytes(path)
    header = image_header(data, kind)
    nbytes = limits.check(kind.upper(), header.width, header.height, 1, 1)  # the pixel count first ...
    if header.pixels > limits.max_pixels:
        raise InputError("too-large", f"{header.pages} pages of {header.pixels} pixels exceed the limit of "
                                      f"{limits.max_pixels}")
    if header.nbytes > limits.max_bytes:  # ... then the bytes, every channel and page counted
        raise InputError("too-large", f"{kind.upper()} decodes to {header.nbytes:,} bytes, over the memory limit "
                                      f"of {limits.max_bytes:,} (--max-memory)")

    def frames() -> Iterator[Frame]:
        info = {"format": kind}
        for index, page in enumerate(decode_image(data, kind, header)):
            yield Frame(_to_grey(page, "BGR"), str(path), index, info={**info, "dtype": str(page.dtype)})

    return Reader(str(path), header.pages, max(nbytes, header.nbytes), frames)


def _dicom_reader(path: Path, limits: ReadLimits) -> Reader:
    from ._dicom import DicomReader, voi_window

    dicom = DicomReader(path, limits)
    grey = dicom.photometric.startswith("MONOCHROME")
    window = voi_window(dicom.ds) if grey else None
    invert = dicom.photometric == "MONOCHROME1"
    rescale = dicom.rescale if grey else (1.0, 0.0)
    info = dicom.info
    identity = dicom.identity()

    def frames() -> Iterator[Frame]:
        for index, array in enumerate(dicom.frames()):
            pixels = _dicom_grey(array, dicom.photometric)
            where = None if identity is None else replace(identity, frame=index)
            yield Frame(_native(pixels), str(path), index, window, invert, dict(info), rescale, where)

    return Reader(str(path), dicom.count, dicom.nbytes, frames, identity)


def _dicom_grey(array: np.ndarray, photometric: str) -> np.ndarray:
    """One decoded frame as grey: colour (pydicom gives RGB) converted; palette indices kept as grey."""
    if array.ndim == 3 and photometric != "PALETTE COLOR":
        return _to_grey(array, "RGB")
    if array.ndim != 2:
        raise InputError("unsupported-image", f"a DICOM frame of shape {array.shape} is not a 2-D image")
    return array


def _native(img: np.ndarray) -> np.ndarray:
    """Contiguous, native byte order (big-endian DICOM decodes to '>i2')."""
    return np.ascontiguousarray(img, dtype=img.dtype.newbyteorder("="))


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
