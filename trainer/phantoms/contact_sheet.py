"""Contact sheet of phantom slices: the range of anatomy, acquisition and storage the generator draws.

Run: ``python -m asinfer.trainer.phantoms.contact_sheet docs/phantoms_contact_sheet.png``.
One row per anatomy variant (the last row is the held-out setting: anatomy
``elderly`` with profile ``vendor-b``); the other rows draw from the
training profile ``mixed`` and each shows another way of storing the image
(bit depth, VOI window or none, MONOCHROME1). Each slice is written as the
DICOM file ``asinfer synth --format dicom`` writes and read back through the
engine's one read-and-preprocess path (``asinfer.engine.load_slices``, with
the default preprocessing at 224x224). Per row: the positive slice as the
engine's 8-bit mapping before CLAHE (captioned with anatomy, profile, field,
matrix and storage) and as exactly what the model gets, with red lesion
outlines; then the negative slice as the model gets it, captioned with the
mimics drawn on it. SYNTHETIC data.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from asinfer.engine import Preprocessor, load_slices, read_frames, to_uint8

from ._dicom import write_dicom_slice
from ._profiles import TRAINING_PROFILE
from ._series import Series, generate_series
from ._variants import ANATOMIES, TRAINING_ANATOMIES

TILE = 224
# Storage shown per training row: (bits, 8-bit export, windowed, photometric).
_STORAGE = ((12, "", True, "MONOCHROME2"), (8, "shift", False, "MONOCHROME2"), (16, "", True, "MONOCHROME1"),
            (8, "full", True, "MONOCHROME2"), (12, "", False, "MONOCHROME1"), (16, "", False, "MONOCHROME2"))


def model_view(series: Series, i: int, pre: Preprocessor) -> tuple[np.ndarray, np.ndarray]:
    """(8-bit display before CLAHE, model input) of slice ``i``, read from its DICOM file by the engine."""
    with tempfile.TemporaryDirectory(prefix="asinfer-sheet-") as tmp:
        path = Path(tmp) / "slice.dcm"
        write_dicom_slice(path, series, i)
        (item,) = load_slices(path, pre)
        if not item.ok:
            raise RuntimeError(f"the engine could not read a phantom slice: {item.reason}: {item.message}")
        display = to_uint8(read_frames(path)[0], pre.spec)
    return cv2.resize(display, (TILE, TILE), interpolation=cv2.INTER_AREA), item.image


def _caption(tile: np.ndarray, lines: list[str]) -> None:
    for k, text in enumerate(lines):
        cv2.putText(tile, text, (3, 12 + 12 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 255, 255), 1, cv2.LINE_AA)


def _tiles(series: Series, i: int, pre: Preprocessor) -> list[np.ndarray]:
    display, model = (cv2.cvtColor(x, cv2.COLOR_GRAY2BGR) for x in model_view(series, i, pre))
    mask = cv2.resize(series.masks[i].astype(np.uint8), (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(model, contours, -1, (0, 0, 255), 1)
    st = series.acquisition.storage
    storage = f"{st.bits}-bit{' ' + st.export8 if st.export8 else ''} {'window' if series.window else 'no window'}"
    _caption(display, [f"{series.anatomy} | {series.profile}", f"{series.field_strength_t:.2g} T {series.size}px",
                       storage, series.photometric, *_rendering(series)])
    notes = series.findings[i] or (["lesion"] if series.slice_labels[i] else ["no mimic"])
    _caption(model, [f"{series.patient_id} s{i}"] + [", ".join(notes[k:k + 3]) for k in range(0, len(notes), 3)])
    return [display, model]


def _rendering(series: Series) -> list[str]:
    """The departures from the plain rendering this series drew (``render_variety``), as one caption line."""
    r = series.acquisition.rendering
    drawn = [name for name, on in (("patchy marrow", series.geometry.marrow_patches is not None),
                                   ("k-space ringing", r.kspace is not None), ("ghosts", r.ghosts is not None)) if on]
    return [", ".join(drawn)] if drawn else []


def _wanted(series: Series, storage) -> bool:
    st = series.acquisition.storage
    return (st.bits, st.export8, st.windowed, st.photometric) == storage


def _pick(positive: bool, row: int, seed: int, render_variety: float = 0.0,
          lesion_variety: float = 0.0) -> tuple[Series, int]:
    """A series of the row's anatomy (and storage), and a slice worth showing: a lesion, or the most mimics."""
    names = (*TRAINING_ANATOMIES, next(n for n, v in ANATOMIES.items() if v.held_out))
    held_out = row >= len(TRAINING_ANATOMIES)
    storage = None if held_out else _STORAGE[row % len(_STORAGE)]
    for k in range(400):  # the first seed whose draw stores the slice the way this row shows
        series = generate_series(seed * 100_000 + row * 1000 + k * 2 + int(positive), slices=12, positive=positive,
                                 profile="vendor-b" if held_out else TRAINING_PROFILE, anatomy=names[row],
                                 patient_id=f"{'POS' if positive else 'NEG'}{row}", render_variety=render_variety,
                                 lesion_variety=lesion_variety)
        if storage is None or _wanted(series, storage):
            break
    if positive:
        return series, int(np.argmax([m.sum() for m in series.masks]))
    return series, int(np.argmax([len(f) for f in series.findings]))


def contact_sheet(rows: int | None = None, seed: int = 0, render_variety: float = 0.0,
                  lesion_variety: float = 0.0) -> np.ndarray:
    """BGR uint8 sheet: per row, a positive (8-bit display | model input) and a negative slice (model input).

    ``rows`` None shows every anatomy variant, the held-out one last; ``render_variety`` and
    ``lesion_variety`` as in generate_series.
    """
    pre = Preprocessor(size=(TILE, TILE), threads=1)
    rows = len(ANATOMIES) if rows is None else rows
    # The negative is stored the same way as the positive, so its 8-bit display would add nothing new.
    body = [np.hstack(_tiles(*_pick(True, r, seed, render_variety, lesion_variety), pre)
                      + _tiles(*_pick(False, r, seed, render_variety, lesion_variety), pre)[1:]) for r in range(rows)]
    header = np.zeros((56, body[0].shape[1], 3), np.uint8)
    for k, text in enumerate(("SYNTHETIC PHANTOM - not patient data. Per row: ASAS-positive slice as",
                              "engine 8-bit display | model input (red: lesions); negative slice as model input.",
                              "One anatomy variant per row; last row: held-out anatomy and profile."
                              + (f" render_variety {render_variety:g}." if render_variety else "")
                              + (f" lesion_variety {lesion_variety:g}." if lesion_variety else ""))):
        cv2.putText(header, text, (6, 16 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([header, *body])


def main(argv: list[str] | None = None) -> int:
    """CLI: write the contact sheet PNG."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("docs/phantoms_contact_sheet.png"))
    ap.add_argument("--rows", type=int, default=None, help="default: one per anatomy variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--render-variety", type=float, default=0.0,
                    help="probability of each other rendering of normal tissue (default 0: the plain one)")
    ap.add_argument("--lesion-variety", type=float, default=0.0,
                    help="probability of another look for each lesion (default 0: the plain one)")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), contact_sheet(args.rows, args.seed, args.render_variety, args.lesion_variety),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
