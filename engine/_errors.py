"""Errors the engine raises for inputs it cannot use.

Every expected failure on an input is an :class:`InputError` with a short,
stable ``reason`` code and a one-line message: the batch records it against
that input and carries on. Anything else is a bug and is allowed to surface.
"""

from __future__ import annotations

#: Reason codes, each with what it means. The CLI and JSON output use the code.
REASONS: dict[str, str] = {
    "not-found": "the path does not exist",
    "not-a-file": "a FIFO, device or socket: never opened, so it cannot block the run",
    "unreadable": "the file exists but could not be opened or read (permissions, I/O error)",
    "not-an-image": "the file is neither a DICOM object nor an image format we read",
    "truncated": "the file ends before its pixel data does",
    "no-pixel-data": "a DICOM object without an image (report, plan, waveform...)",
    "unsupported-compression": "a DICOM transfer syntax no installed decoder handles",
    "corrupt-pixel-data": "the pixel data is damaged, or disagrees with the header, although a decoder is installed",
    "unsupported-image": "pixel layout we do not handle (e.g. more than 4 channels)",
    "too-large": "the image exceeds the pixel-count limit (decompression-bomb guard)",
    "empty": "no pixels to use: an empty image, or a folder without images",
    "internal": "an unexpected error while reading this input; please report it",
}


class InputError(ValueError):
    """An input that cannot be turned into a slice.

    Args:
        reason: one of :data:`REASONS`.
        message: one line saying what is wrong and, where there is one, the fix.
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; valid: {sorted(REASONS)}")
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.args[0]}"


class ModelError(ValueError):
    """A model bundle that cannot be used: missing, malformed or tampered with."""
