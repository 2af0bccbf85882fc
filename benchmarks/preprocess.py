"""Preprocessing throughput: the engine's batched path vs a plain per-image OpenCV loop.

    python -m asinfer.benchmarks.preprocess [--rounds 7] [--batch 64] [--size 512]

Two inputs, each a batch of 64 slices of 512x512: 8-bit images, and 16-bit
DICOM-like frames (12-bit values with a VOI window). Contenders, interleaved:

  loop        for each image: cv2.createCLAHE(2.0, (8, 8)).apply, cv2.resize
              (16-bit: min-max to 8 bit first), the way the prototype did it;
              OpenCV's default internal threading
  batched-1   engine.Preprocessor(threads=1), OpenCV limited to one thread:
              the batched path's own single-thread run
  batched-N   engine.Preprocessor(threads=os.cpu_count())

and prints img/s (median, with min-max) and the batched path's speed-up
over its own single-thread run.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from asinfer.engine import Frame, Preprocessor

from ._timing import interleave


def make_inputs(kind: str, batch: int = 64, size: int = 512, seed: int = 0) -> list:
    """Synthetic slices with MR-like smooth structure plus noise (not uniform noise, which CLAHE finds trivial)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        base = cv2.resize(rng.random((16, 16), np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        img = np.clip(base + rng.normal(0, 0.05, (size, size)).astype(np.float32), 0, 1)
        if kind == "uint8":
            out.append((img * 255).astype(np.uint8))
        else:
            out.append(Frame((img * 4095).astype(np.uint16), "<bench>", window=(2048.0, 4096.0)))
    return out


def plain_loop(slices: list, size: int = 224) -> np.ndarray:
    """The baseline: a fresh CLAHE per image, as notebooks do."""
    import cv2

    batch = np.empty((len(slices), size, size, 1), np.uint8)
    for i, s in enumerate(slices):
        img = s.pixels if isinstance(s, Frame) else s
        if img.dtype != np.uint8:
            img = ((img - img.min()) * (255.0 / max(1, np.ptp(img)))).astype(np.uint8)
        eq = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(img)
        batch[i, :, :, 0] = cv2.resize(eq, (size, size), interpolation=cv2.INTER_AREA)
    return batch


def contenders(slices: list, threads: int) -> dict:
    """The three contenders; ``batched-1`` also stops OpenCV's own worker threads,
    so it is a true single-thread run (``loop`` keeps OpenCV's default threading)."""
    one, many = Preprocessor(threads=1), Preprocessor(threads=threads)
    return {
        "loop": lambda: plain_loop(slices),
        "batched-1": lambda: _single_threaded(one, slices),
        f"batched-{threads}": lambda: many(slices),
    }


def _single_threaded(fn, *args):
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return fn(*args)
    finally:
        cv2.setNumThreads(before)


def main(argv: list[str] | None = None) -> None:
    import cv2

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    threads = os.cpu_count() or 1
    print(f"{args.batch} slices of {args.size}x{args.size}, {args.rounds} interleaved rounds, "
          f"{threads} cores, OpenCV {cv2.__version__} ({cv2.getNumThreads()} OpenCV threads)")
    print(f"{'input':<8} {'contender':<11} {'img/s':>8} {'min-max img/s':>16}")
    for kind in ("uint8", "uint16"):
        slices = make_inputs(kind, args.batch, args.size)
        timings = interleave(contenders(slices, threads), rounds=args.rounds)
        for name, t in timings.items():
            lo, hi = t.spread
            print(f"{kind:<8} {name:<11} {t.per_second(args.batch):8.1f} {args.batch / hi:7.1f}-{args.batch / lo:<7.1f}")
        many = timings[f"batched-{threads}"].median
        print(f"{kind:<8} speed-up batched-{threads} / batched-1 = {timings['batched-1'].median / many:.2f}x, "
              f"batched-{threads} / loop = {timings['loop'].median / many:.2f}x")


if __name__ == "__main__":
    main()
