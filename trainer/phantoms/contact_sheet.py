"""Contact sheet of phantom slices: raw, after CLAHE, and with lesion outlines.

Run: ``python -m asinfer.trainer.phantoms.contact_sheet docs/phantoms_contact_sheet.png``.
Tiles are 224x224, the classifier's input size, so what you see is what the
model gets. Positives (left block) carry red lesion outlines; negatives (right
block) are captioned with the mimics drawn on that slice. SYNTHETIC data.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from ._series import Series, generate_series

TILE = 224
_CLAHE = dict(clipLimit=2.0, tileGridSize=(8, 8))
_PROFILES = ("default", "low-field", "high-snr", "vendor-b")


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Robust per-slice min-max of 12-bit values to uint8."""
    lo, hi = np.percentile(img, [0.5, 99.5])
    return np.clip((img.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)


def _tiles(series: Series, i: int) -> list[np.ndarray]:
    raw = to_uint8(series.images[i])
    clahe = cv2.createCLAHE(**_CLAHE).apply(raw)
    small = [cv2.resize(x, (TILE, TILE), interpolation=cv2.INTER_AREA) for x in (raw, clahe)]
    tiles = [cv2.cvtColor(x, cv2.COLOR_GRAY2BGR) for x in small]
    outlined = tiles[1].copy()
    mask = cv2.resize(series.masks[i].astype(np.uint8), (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outlined, contours, -1, (0, 0, 255), 1)
    caption = f"{series.patient_id} s{i} {series.profile} {series.size}px"
    note = ", ".join(series.findings[i]) or ("lesion" if series.slice_labels[i] else "no mimic")
    for text, y in ((caption, 12), (note, TILE - 5)):
        cv2.putText(outlined, text, (3, y), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 255, 255), 1, cv2.LINE_AA)
    return tiles + [outlined]


def _pick(positive: bool, row: int, seed: int) -> tuple[Series, int]:
    """A series and a slice worth showing: a lesion slice, or a mimic slice."""
    series = generate_series(seed * 100 + row * 2 + int(positive), slices=12, positive=positive,
                             profile=_PROFILES[row % len(_PROFILES)], patient_id=f"{'POS' if positive else 'NEG'}{row}")
    if positive:
        return series, int(np.argmax([m.sum() for m in series.masks]))
    return series, int(np.argmax([len(f) for f in series.findings]))


def contact_sheet(rows: int = 4, seed: int = 0) -> np.ndarray:
    """BGR uint8 sheet: per row, a positive and a negative slice, each raw | CLAHE | outlined."""
    body = [np.hstack(_tiles(*_pick(True, r, seed)) + _tiles(*_pick(False, r, seed))) for r in range(rows)]
    header = np.zeros((26, body[0].shape[1], 3), np.uint8)
    text = ("SYNTHETIC PHANTOM - not patient data | left: ASAS-positive (raw, CLAHE, CLAHE+lesion outline) "
            "| right: negative with mimics")
    cv2.putText(header, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([header, *body])


def main(argv: list[str] | None = None) -> int:
    """CLI: write the contact sheet PNG."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("docs/phantoms_contact_sheet.png"))
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), contact_sheet(args.rows, args.seed), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
