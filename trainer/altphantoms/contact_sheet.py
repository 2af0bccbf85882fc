"""Contact sheet of the independent (test-only) phantoms, as the engine reads them.

Run: ``python -m asinfer.trainer.altphantoms.contact_sheet docs/independent_phantoms_contact_sheet.png``.
Each slice is written as a DICOM file and read back through the engine
(``asinfer.engine.load_slices`` with the default preprocessing at 224x224), so
the middle tile of each triple is exactly what a model gets; the first is the
engine's 8-bit mapping (VOI window) before CLAHE, the third the model input
with red lesion outlines (positives) or the names of the mimics drawn
(negatives). SYNTHETIC PHANTOM - independent test source - never for training.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from asinfer.engine import Preprocessor, load_slices, read_frames, to_uint8
from asinfer.trainer.phantoms import Series

from ._dataset import write_slice_file
from ._generate import generate_series

TILE = 224


def model_view(series: Series, i: int, pre: Preprocessor) -> tuple[np.ndarray, np.ndarray]:
    """(8-bit display before CLAHE, model input) of slice ``i``, read from its DICOM file by the engine."""
    with tempfile.TemporaryDirectory(prefix="asinfer-alt-sheet-") as tmp:
        path = Path(tmp) / "slice.dcm"
        write_slice_file(path, series, i, "dicom", seed=0)
        (item,) = load_slices(path, pre)
        if not item.ok:
            raise RuntimeError(f"the engine could not read a phantom slice: {item.reason}: {item.message}")
        display = to_uint8(read_frames(path)[0], pre.spec)
    return cv2.resize(display, (TILE, TILE), interpolation=cv2.INTER_AREA), item.image


def _tiles(series: Series, i: int, pre: Preprocessor) -> list[np.ndarray]:
    tiles = [cv2.cvtColor(x, cv2.COLOR_GRAY2BGR) for x in model_view(series, i, pre)]
    outlined = tiles[1].copy()
    mask = cv2.resize(series.masks[i].astype(np.uint8), (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outlined, contours, -1, (0, 0, 255), 1)
    caption = f"{series.patient_id} s{i} {series.size}px"
    note = ", ".join(series.findings[i]) or "no mimic"
    if series.slice_labels[i]:
        note = "oedema; " + note
    for text, y in ((caption, 12), (note, TILE - 5)):
        cv2.putText(outlined, text, (3, y), cv2.FONT_HERSHEY_SIMPLEX, 0.34, (0, 255, 255), 1, cv2.LINE_AA)
    return tiles + [outlined]


def _pick(positive: bool, row: int, seed: int) -> tuple[Series, int]:
    """A series and a slice worth showing: the largest lesion, or the slice with the most mimics."""
    series = generate_series(seed * 100 + row * 2 + int(positive), slices=12, positive=positive,
                             patient_id=f"{'POS' if positive else 'NEG'}{row}")
    if positive:
        return series, int(np.argmax([m.sum() for m in series.masks]))
    return series, int(np.argmax([len(f) for f in series.findings]))


def contact_sheet(rows: int = 4, seed: int = 0) -> np.ndarray:
    """BGR uint8 sheet: per row, a positive and a negative slice, each 8-bit | model input | annotated."""
    pre = Preprocessor(size=(TILE, TILE), threads=1)
    body = [np.hstack(_tiles(*_pick(True, r, seed), pre) + _tiles(*_pick(False, r, seed), pre)) for r in range(rows)]
    header = np.zeros((26, body[0].shape[1], 3), np.uint8)
    text = ("SYNTHETIC PHANTOM - independent TEST source, never for training | left: ASAS-positive "
            "(8-bit, model input, + lesion outline) | right: negative with mimics")
    cv2.putText(header, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([header, *body])


def main(argv: list[str] | None = None) -> int:
    """CLI: write the contact sheet PNG."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("docs/independent_phantoms_contact_sheet.png"))
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), contact_sheet(args.rows, args.seed), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
