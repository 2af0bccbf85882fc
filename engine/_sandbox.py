"""A child process for the one decoder that can kill ours.

gdcm throws C++ exceptions on damaged codestreams that its Python bindings do
not catch: the process aborts, and with it the whole batch. For every
transfer syntax another installed plugin decodes, that plugin is used
(``_dicom._safe_plugin``); JPEG lossless has no other permissively licensed
decoder, so its frames are decoded here, in a child process. If the child
dies, the frame is reported as damaged and a new child starts for the next
one. One child serves the whole run; requests are serialised.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

import numpy as np

from ._errors import InputError


class Sandbox:
    """Decodes DICOM frames in a child process: ``frame(path, index, options)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc = None
        self._conn = None

    def frame(self, path: str, index: int, options: dict[str, Any]) -> np.ndarray:
        """Frame ``index`` of ``path``, decoded by ``pydicom.pixels.iter_pixels(path, **options)`` in the child.

        Raises:
            InputError: ``corrupt-pixel-data`` when the decoder failed or crashed the child.
        """
        with self._lock:
            conn = self._connection()
            try:
                conn.send((path, index, options))
                status, value = conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                self._discard()
                raise InputError("corrupt-pixel-data", "the JPEG lossless decoder (gdcm) crashed on this pixel "
                                                       "data: it is damaged") from None
        if status == "ok":
            return value
        raise InputError("corrupt-pixel-data", f"pixel data could not be decoded: {value}")

    def _connection(self):
        if self._proc is None or not self._proc.is_alive():
            import multiprocessing

            context = multiprocessing.get_context("spawn")  # no copy of this process's threads and sessions
            parent, child = context.Pipe()
            self._proc = context.Process(target=_serve, args=(child,), daemon=True, name="asinfer-decoder")
            self._proc.start()
            child.close()
            self._conn = parent
        return self._conn

    def _discard(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
        self._proc = self._conn = None

    def close(self) -> None:
        with self._lock:
            self._discard()


def _serve(conn) -> None:
    """The child: decode one frame a request, a file's dataset kept while its frames are asked for."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # libjpeg's and gdcm's complaints are not the user's output
    from pydicom.pixels import iter_pixels

    while True:
        try:
            path, index, options = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", next(iter_pixels(path, indices=[index], **options))))
        except Exception as exc:
            conn.send(("error", " ".join(f"{type(exc).__name__}: {exc}".split())[:200]))


_shared: Sandbox | None = None
_shared_lock = threading.Lock()


def sandbox() -> Sandbox:
    """The process-wide sandbox, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Sandbox()
            atexit.register(_shared.close)
        return _shared
