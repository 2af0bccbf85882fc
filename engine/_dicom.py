"""DICOM: the header first, every size checked against the limits, then the frames one at a time.

Order of work for one file, each step before anything it would let grow:
1. a deflated dataset is inflated as a stream into a temporary file, and
   refused once it passes what the pixel limit allows;
2. the header is parsed with large values deferred; Rows, Columns, frames,
   samples and bits must be sane numbers, and their product within limits;
3. compressed frames must declare, in their own codestream (JPEG SOF,
   JPEG-LS SOF55, JPEG 2000 SIZ), the size the header declares;
4. frames are decoded one by one (``pydicom.pixels.iter_pixels``; for
   uncompressed data straight from the file), so a 160,000-frame file never
   holds more than one decoded frame at a time.

Every expected failure is an :class:`InputError` with the reason that fits:
malformed values are ``unreadable``, damaged pixel data with a decoder
installed is ``corrupt-pixel-data``, and only a transfer syntax nobody can
decode is ``unsupported-compression``.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ._errors import InputError
from ._images import jpeg_sof

DEFLATED = "1.2.840.10008.1.2.1.99"
NATIVE_EXPLICIT = "1.2.840.10008.1.2.1"
NATIVE = {"1.2.840.10008.1.2", NATIVE_EXPLICIT, "1.2.840.10008.1.2.2"}  # uncompressed: frames stream from the file
_JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
         "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}  # JPEG family and JPEG-LS: a SOF marker
_JPEG_LS = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203"}
#: Transfer syntaxes the base install decodes (README "DICOM transfer syntaxes"), uncompressed first: what
#: ``asinfer serve`` accepts. Left out: 12-bit JPEG Extended and HTJ2K, which need optional plugins.
DECODED = (NATIVE_EXPLICIT, "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", DEFLATED, "1.2.840.10008.1.2.5",
           "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
           "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")

# Transfer syntaxes the base install cannot decode, with the plugin that can.
_DECODER_HINTS = {
    "1.2.840.10008.1.2.4.51": "12-bit JPEG Extended needs pylibjpeg-libjpeg (GPLv3): pip install pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.201": "HTJ2K needs pylibjpeg-openjpeg>=2.4: pip install -U pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "HTJ2K needs pylibjpeg-openjpeg>=2.4: pip install -U pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "HTJ2K needs pylibjpeg-openjpeg>=2.4: pip install -U pylibjpeg-openjpeg",
}
_DEFAULT_HINT = "install a pydicom decoder plugin for it (python-gdcm, pylibjpeg-libjpeg, pylibjpeg-openjpeg or pyjpegls)"
IN_MEMORY_HEADER = 4 << 20  # files up to this size are parsed from a bytes buffer
HEADER_ALLOWANCE = 16 << 20  # bytes a deflated dataset may hold beyond its pixels (overlays, private data)
_PARSE_ERRORS = (Exception,)  # pydicom and its plugins raise many types for malformed files; all mean "malformed"


class DicomReader:
    """One DICOM file, its header checked; :meth:`frames` decodes it frame by frame.

    Raises (from the constructor): :class:`InputError`.
    """

    def __init__(self, path: Path, limits) -> None:
        _quiet_pydicom()
        meta_ts = _transfer_syntax_of(path)
        self._scratch = None
        if meta_ts != DEFLATED and _mentions_deflate(path):  # pydicom would inflate it whole, in memory
            raise InputError("unreadable", "a deflated DICOM dataset whose file meta group cannot be read")
        if meta_ts == DEFLATED:  # inflated as a stream onto disk, never whole in memory
            self._scratch = _inflate_to_file(path, 2 * limits.max_pixels + HEADER_ALLOWANCE)
            path = Path(self._scratch.name)
        elif meta_ts not in NATIVE and path.stat().st_size > limits.max_bytes + HEADER_ALLOWANCE:
            # encapsulated pixel data is read whole (pydicom cannot defer undefined lengths)
            raise InputError("too-large", f"compressed DICOM file of {path.stat().st_size:,} bytes is over the "
                                          f"memory limit of {limits.max_bytes:,} (--max-memory)")
        self.path = path
        self.ds = _header(path)
        self.ts = _transfer_syntax(self.ds)
        self.rows, self.cols = _count(self.ds, "Rows"), _count(self.ds, "Columns")
        self.count = _count(self.ds, "NumberOfFrames", default=1)
        self.samples = _count(self.ds, "SamplesPerPixel", default=1)
        self.bits = _count(self.ds, "BitsAllocated", default=16)
        self.stored = _safe_count(self.ds, "BitsStored") or self.bits
        self.photometric = (_text(self.ds, "PhotometricInterpretation") or "MONOCHROME2").strip().upper()
        _check_layout(self.samples, self.bits, self.photometric)
        self.nbytes = limits.check("DICOM", self.cols, self.rows, self.count, self.samples * max(1, self.bits // 8))
        self.rescale = (_number(self.ds, "RescaleSlope", 1.0), _number(self.ds, "RescaleIntercept", 0.0))
        if self.ts in _JPEG | _J2K:
            self._check_codestreams()

    def identity(self):
        """Where this file's frames belong (series, study, instance, position); None without a SeriesInstanceUID."""
        from ._series import SliceIdentity

        series = _text(self.ds, "SeriesInstanceUID").strip()
        if not series:
            return None
        return SliceIdentity(
            series_uid=series, study_uid=_text(self.ds, "StudyInstanceUID").strip(),
            sop_uid=_text(self.ds, "SOPInstanceUID").strip(), sop_class_uid=_text(self.ds, "SOPClassUID").strip(),
            instance_number=_safe_count(self.ds, "InstanceNumber") or None,
            position=_numbers(self.ds, "ImagePositionPatient", 3), orientation=_numbers(self.ds, "ImageOrientationPatient", 6),
            modality=_text(self.ds, "Modality").strip(), series_description=_text(self.ds, "SeriesDescription").strip(),
            frame_of_reference_uid=_text(self.ds, "FrameOfReferenceUID").strip(),
            rows=_safe_count(self.ds, "Rows"), columns=_safe_count(self.ds, "Columns"),
            pixel_spacing=_numbers(self.ds, "PixelSpacing", 2),
            slice_thickness=(_numbers(self.ds, "SliceThickness", 1) or (None,))[0])

    @property
    def info(self) -> dict[str, Any]:
        """Non-identifying facts about the file (a malformed one is left empty: it decides nothing)."""
        return {"format": "dicom", "modality": _text(self.ds, "Modality"),
                "transfer_syntax": _ts_name(self.ts), "photometric": self.photometric,
                "bits_stored": _safe_count(self.ds, "BitsStored")}

    def frames(self) -> Iterator[np.ndarray]:
        """The decoded frames, one at a time, as pydicom returns them (grey or RGB)."""
        from pydicom.pixels import iter_pixels

        # Uncompressed data streams from the file a frame at a time; compressed data is in memory already.
        source = str(self.path) if self.ts in NATIVE else self.ds
        options = self._syntax_hint()
        decode = _in_sandbox if _only_gdcm(self.ts) else lambda: iter_pixels(source, **options)
        try:
            for index, array in enumerate(decode(str(self.path), self.count, options)
                                          if decode is _in_sandbox else decode()):
                if index >= self.count:
                    raise InputError("corrupt-pixel-data", f"more frames than NumberOfFrames {self.count}")
                yield array
        except InputError:
            raise
        except MemoryError:
            raise InputError("too-large", "not enough memory to decode this file's pixel data") from None
        except Exception as exc:
            raise self._decode_error(exc) from None
        except BaseException as exc:  # a Rust decoder's panic (pyo3 PanicException) is a BaseException
            if type(exc).__name__ != "PanicException":
                raise
            raise InputError("corrupt-pixel-data", f"the {_ts_name(self.ts)} decoder gave up on this pixel "
                                                   f"data: {_one_line(exc)}") from None

    def _check_jpeg_bits(self, frame: bytes) -> None:
        """JPEG holds at most 16 bits a sample, in 8- or 16-bit words; gdcm aborts the process otherwise."""
        if self.ts not in _JPEG:
            return
        precision = (jpeg_sof(frame) or (0, 0, 0, 0))[3]
        if self.bits not in (8, 16) or precision > self.bits:
            raise InputError("corrupt-pixel-data", f"{precision}-bit JPEG data in BitsAllocated {self.bits}")
        if self.ts not in _JPEG_LS and self.bits == 8 and self.stored != 8:
            raise InputError("corrupt-pixel-data", f"8-bit JPEG data with BitsStored {self.stored}")

    def _syntax_hint(self) -> dict:
        """iter_pixels options: the transfer syntax for a dataset without a meta group, and the decoder plugin.

        gdcm, pydicom's first choice for JPEG, JPEG-LS and JPEG 2000, throws C++ exceptions on damaged
        codestreams that its bindings do not catch: the process aborts and the whole batch is lost.
        Where another installed plugin decodes the syntax, it is used instead.
        """
        from pydicom.uid import UID

        options = {}
        meta = getattr(self.ds, "file_meta", None)
        if self.ts and not (meta is not None and meta.get("TransferSyntaxUID")):
            options["transfer_syntax_uid"] = UID(self.ts)
        plugin = _safe_plugin(self.ts)
        if plugin:
            options["decoding_plugin"] = plugin
        return options

    def _decode_error(self, exc: BaseException) -> InputError:
        text = _one_line(exc)
        short = "less than expected" in text or "truncat" in text.lower() or "end of the file" in text.lower()
        if short or (self.ts in NATIVE and "reshape" in text):  # uncompressed frames cut short
            return InputError("truncated", "DICOM pixel data is shorter than its header says")
        unsupported = "does not support" in text or "not supported" in text  # what every plugin said
        if self.ts and (unsupported or not _decoder_available(self.ts)):
            hint = _DECODER_HINTS.get(self.ts, _DEFAULT_HINT)
            return InputError("unsupported-compression", f"cannot decode '{_ts_name(self.ts)}': {hint}")
        return InputError("corrupt-pixel-data", f"pixel data could not be decoded ({_ts_name(self.ts)}): {text}")

    def _check_codestreams(self) -> None:
        """Each compressed frame's own header must declare the size the DICOM header does."""
        from pydicom.encaps import generate_frames

        try:
            for index, frame in enumerate(generate_frames(self.ds.PixelData, number_of_frames=self.count)):
                size = _codestream_size(frame, self.ts)
                if size is None:
                    raise InputError("corrupt-pixel-data", f"frame {index}: no readable "
                                                           f"{_ts_name(self.ts)} frame header")
                width, height, components = size
                if (width, height) != (self.cols, self.rows):
                    raise InputError("corrupt-pixel-data", f"frame {index} is {width}x{height} in its codestream, "
                                                           f"but the header says {self.cols}x{self.rows}")
                if components != self.samples:  # gdcm aborts the whole process on this mismatch
                    raise InputError("corrupt-pixel-data", f"frame {index} has {components} component(s) in its "
                                                           f"codestream, but the header says {self.samples}")
                self._check_jpeg_bits(frame)
        except InputError:
            raise
        except MemoryError:
            raise InputError("too-large", "the encapsulated pixel data does not fit in memory") from None
        except Exception as exc:
            raise InputError("corrupt-pixel-data", f"encapsulated pixel data is damaged: {_one_line(exc)}") from None


def _quiet_pydicom() -> None:
    """No validation warnings: pydicom prints raw element values in them, a channel for patient data."""
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE


def _transfer_syntax_of(path: Path) -> str:
    """The file meta group's transfer syntax UID, or '' when there is none or it cannot be read.

    Read by hand from the first 64 KB (the meta group is explicit VR little endian): pydicom's reader
    allocates an element's declared length before reading it.
    """
    with open(path, "rb") as fh:
        head = fh.read(64 << 10)
    if head[128:132] != b"DICM":
        return ""
    pos = 132
    while pos + 8 <= len(head):
        group, element = struct.unpack("<HH", head[pos:pos + 4])
        if group != 0x0002:
            return ""
        vr = head[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            (length,) = struct.unpack("<I", head[pos + 8:pos + 12]) if pos + 12 <= len(head) else (1 << 32,)
            start_value = pos + 12
        else:
            (length,) = struct.unpack("<H", head[pos + 6:pos + 8])
            start_value = pos + 8
        if element == 0x0010:
            return head[start_value:start_value + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = start_value + length
    return ""


def _mentions_deflate(path: Path) -> bool:
    """The deflated transfer syntax UID appears where a file meta group would be."""
    with open(path, "rb") as fh:
        return DEFLATED.encode() in fh.read(64 << 10)


def _inflate_to_file(path: Path, limit: int):
    """A deflated dataset inflated, as a stream, into a temporary Part 10 file in explicit VR little endian.

    Refused once it passes ``limit`` bytes: a few KB of deflate can expand to gigabytes. The file
    is deleted when the returned object is closed or collected.
    """
    import tempfile

    from pydicom.filebase import DicomFileLike
    from pydicom.filereader import read_file_meta_info
    from pydicom.filewriter import write_file_meta_info

    scratch = tempfile.NamedTemporaryFile(prefix="asinfer-inflated-", suffix=".dcm")
    try:
        meta = read_file_meta_info(path)
        meta.TransferSyntaxUID = NATIVE_EXPLICIT
        scratch.write(b"\0" * 128 + b"DICM")
        out = DicomFileLike(scratch)
        out.is_little_endian, out.is_implicit_VR = True, False
        if "FileMetaInformationGroupLength" in meta:
            del meta["FileMetaInformationGroupLength"]  # recomputed by the writer
        write_file_meta_info(out, meta, enforce_standard=False)
        with open(path, "rb") as fh:
            fh.seek(_meta_end(fh))
            _inflate(fh, scratch, limit)
        scratch.flush()
    except InputError:
        scratch.close()
        raise
    except Exception as exc:
        scratch.close()
        raise InputError("unreadable", f"deflated DICOM with a malformed file meta group: {_one_line(exc)}") from None
    except BaseException:
        scratch.close()
        raise
    return scratch


def _meta_end(fh) -> int:
    """Offset of the first byte after the file meta group (Part 10 layout: its length is its first element)."""
    head = fh.read(144)
    if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise InputError("unreadable", "deflated DICOM without a readable file meta group")
    (length,) = struct.unpack("<I", head[140:144])
    return 144 + length


def _inflate(source, target, limit: int) -> None:
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    for block in iter(lambda: source.read(1 << 16), b""):
        while block and not inflater.eof:
            try:
                out = inflater.decompress(block, 1 << 20)
            except zlib.error as exc:
                raise InputError("corrupt-pixel-data", f"deflated dataset is damaged: {exc}") from None
            total += len(out)
            if total > limit:
                raise InputError("too-large", f"deflated dataset inflates past {limit:,} bytes (the pixel "
                                              f"limit); refused while inflating")
            target.write(out)
            block = inflater.unconsumed_tail
        if inflater.eof:
            return


MAX_READS = 500_000  # reads while parsing a header: about one per element; real headers need a few thousand


class _Guarded:
    """Reads for pydicom's header parser: never more than is left, and not endlessly.

    A 6 KB file declaring a 1 GiB element must not make the parser allocate 1 GiB before it finds out;
    16 MB of zeros inside a sequence parse as 2 million empty elements (7 s, 0.7 GB), and nested
    sequences are read without pydicom's ``stop_when`` hook, so the reads themselves are counted.
    """

    _reads = 0
    _size = 0

    def read(self, size: int = -1) -> bytes:
        self._reads += 1
        if self._reads > MAX_READS:
            raise InputError("unreadable", f"the header needs more than {MAX_READS:,} reads: not a DICOM header, "
                                           f"or a damaged one")
        left = max(0, self._size - self.tell())
        return super().read(left if size is None or size < 0 else min(size, left))


class _BoundedFile(_Guarded, io.FileIO):
    """A file read through :class:`_Guarded`; pydicom reopens deferred values with this class too."""

    def __init__(self, name, mode: str = "rb", *args, **kwargs) -> None:
        super().__init__(name, mode, *args, **kwargs)
        self._size = os.fstat(self.fileno()).st_size


class _BoundedBytes(_Guarded, io.BytesIO):
    """Bytes read through :class:`_Guarded`."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._size = len(data)


def _header(path: Path):
    """The dataset with large values deferred (read when first used), or an InputError saying why not."""
    from pydicom.errors import InvalidDicomError

    from pydicom.filereader import read_partial

    try:
        if path.stat().st_size <= IN_MEMORY_HEADER:  # small: parsed from memory
            with _BoundedBytes(path.read_bytes()) as fh:
                ds = read_partial(fh, force=True)
        else:
            with _BoundedFile(str(path), "rb") as fh:  # a str name: pydicom reopens it for deferred values
                ds = read_partial(fh, defer_size=64 << 10, force=True)
    except InputError:
        raise
    except InvalidDicomError as exc:
        raise InputError("not-an-image", f"not a DICOM file: {_one_line(exc)}") from None
    except (EOFError, struct.error) as exc:
        raise InputError("truncated", f"DICOM header ends early ({type(exc).__name__})") from None
    except MemoryError:
        raise InputError("too-large", "the DICOM header does not fit in memory") from None
    except _PARSE_ERRORS as exc:
        raise InputError("unreadable", f"DICOM header could not be parsed: {_one_line(exc)}") from None
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        try:
            sop = str(getattr(ds.get("SOPClassUID"), "name", "") or "unknown SOP class")
        except _PARSE_ERRORS:
            sop = "unknown SOP class"
        if not len(ds):
            raise InputError("truncated", "no DICOM elements in the file")
        if "Rows" in ds or "Image Storage" in sop:  # an image object without its pixels: cut short
            raise InputError("truncated", f"the file ends before its pixel data ({sop})")
        raise InputError("no-pixel-data", f"DICOM object has no pixel data ({sop})")
    return ds


def _transfer_syntax(ds) -> str:
    """The file meta's transfer syntax; for a dataset without one, the encoding pydicom found it in."""
    meta = getattr(ds, "file_meta", None)
    uid = str(meta.get("TransferSyntaxUID") or "") if meta is not None else ""
    if uid:
        return uid
    implicit, little = getattr(ds, "original_encoding", (None, None))
    return {(True, True): "1.2.840.10008.1.2", (False, True): NATIVE_EXPLICIT,
            (False, False): "1.2.840.10008.1.2.2"}.get((implicit, little), "")


def _count(ds, keyword: str, default: int | None = None, minimum: int = 1) -> int:
    """A whole-number header value, checked: a malformed one is the file's fault, not ours."""
    try:
        raw = ds.get(keyword)
    except _PARSE_ERRORS:
        raw = "<unparseable>"
    if raw is None or raw == "":
        if default is None:
            raise InputError("unreadable", f"DICOM header has no {keyword}")
        return default
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value != int(value) or value < minimum:
        raise InputError("unreadable", f"DICOM {keyword} {str(raw)[:20]!r} is not a whole number >= {minimum}")
    return int(value)


def _text(ds, keyword: str) -> str:
    try:
        return str(ds.get(keyword, "") or "")
    except _PARSE_ERRORS:
        return ""


def _numbers(ds, keyword: str, count: int) -> tuple[float, ...] | None:
    """``count`` finite decimals of a multi-valued element, or None when absent or malformed."""
    try:
        raw = ds.get(keyword)
        values = tuple(float(v) for v in (raw if _is_multi(raw) else [raw])) if raw is not None else ()
    except Exception:
        return None
    return values if len(values) == count and all(math.isfinite(v) for v in values) else None


def _safe_count(ds, keyword: str) -> int:
    try:
        return _count(ds, keyword, default=0, minimum=0)
    except InputError:
        return 0


def _number(ds, keyword: str, default: float) -> float:
    """A finite decimal header value (first of several), or ``default`` when absent."""
    try:
        raw = ds.get(keyword)
    except _PARSE_ERRORS:
        raw = "<unparseable>"
    if raw is None or raw == "":
        return default
    raw = raw[0] if _is_multi(raw) else raw
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError("unreadable", f"DICOM {keyword} {str(raw)[:20]!r} is not a finite number")
    return value


_ONE_SAMPLE = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")


def _check_layout(samples: int, bits: int, photometric: str) -> None:
    """Samples, bits and photometric interpretation that agree (decoders abort the process on some that do not)."""
    if samples not in (1, 3):
        raise InputError("unsupported-image", f"SamplesPerPixel {samples}: only grey (1) and colour (3) are read")
    if bits not in (1, 8, 16, 32, 64):
        raise InputError("unsupported-image", f"BitsAllocated {bits} is not 1, 8, 16, 32 or 64")
    if (photometric in _ONE_SAMPLE) != (samples == 1):
        raise InputError("unreadable", f"PhotometricInterpretation {photometric[:20]!r} does not fit "
                                       f"SamplesPerPixel {samples}")


def voi_window(ds) -> tuple[float, float] | None:
    """The first VOI window (center, width); None when absent, malformed or not finite (then the stretch is used)."""
    try:
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    except _PARSE_ERRORS:
        return None
    if center is None or width is None:
        return None
    center = center[0] if _is_multi(center) else center
    width = width[0] if _is_multi(width) else width
    try:
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(center) and math.isfinite(width)) or width < 1:
        return None
    return center, width


def _codestream_size(frame: bytes, ts: str) -> tuple[int, int, int] | None:
    """(width, height, components) a compressed frame declares in its own header."""
    if ts in _JPEG:
        found = jpeg_sof(frame)
        return None if found is None else found[:3]
    siz = frame.find(b"\xff\x4f\xff\x51", 0, 4096)  # SOC then SIZ, after any JP2 boxes
    if siz < 0 or len(frame) < siz + 42:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", frame[siz + 8:siz + 24])
    (components,) = struct.unpack(">H", frame[siz + 40:siz + 42])
    return xsiz - xosiz, ysiz - yosiz, components


#: Decoder plugins that raise Python exceptions on damaged data, preferred over gdcm (which aborts).
_SAFE_PLUGINS = ("pyjpegls", "pylibjpeg", "pillow", "pydicom")


def _safe_plugin(ts: str) -> str | None:
    """The first installed plugin of :data:`_SAFE_PLUGINS` that decodes ``ts``; None leaves pydicom's order."""
    from pydicom.pixels import get_decoder

    if ts in NATIVE or not ts:
        return None
    try:
        available = get_decoder(ts).available_plugins
    except Exception:  # an unknown or undecodable syntax: pydicom will say so when decoding
        return None
    return next((name for name in _SAFE_PLUGINS if name in available), None)


def _only_gdcm(ts: str) -> bool:
    """Only gdcm decodes ``ts`` here (JPEG lossless): its frames are decoded in the sandbox process."""
    from pydicom.pixels import get_decoder

    if ts in NATIVE or not ts or _safe_plugin(ts):
        return False
    try:
        return "gdcm" in get_decoder(ts).available_plugins
    except Exception:
        return False


def _in_sandbox(path: str, count: int, options: dict) -> Iterator[np.ndarray]:
    """Frames decoded one by one in the child process of :mod:`._sandbox` (gdcm can abort the process)."""
    from ._sandbox import sandbox

    for index in range(count):
        yield sandbox().frame(path, index, options)


def _decoder_available(ts: str) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(ts).is_available)
    except (NotImplementedError, ValueError, KeyError):
        return False


def _ts_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name if uid else "no transfer syntax"


def _is_multi(value) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__
