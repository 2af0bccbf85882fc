"""Give an existing bundle's ONNX artifacts the Grad-CAM outputs, without retraining or reconverting.

    python -m asinfer.trainer.convert.explain models/asinfer-vgg16-phantom

Each ONNX artifact gets ``features`` and the head's weights as extra outputs
(see ``asinfer.trainer.convert._explain``); its probabilities are checked to be
bit-identical on a phantom batch before the bundle is rewritten (re-hashed,
manifest re-embedded). Bundles converted since these outputs exist have them.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ._explain import add_explanation_outputs


def explain_bundle(bundle: Path, probe: np.ndarray) -> dict[str, dict]:
    """Add the outputs to every ONNX artifact of ``bundle``; ``probe`` is a uint8 batch to check them on.

    Raises:
        ValueError: an artifact's probabilities changed (the bundle is left as it was).
    """
    from asinfer.engine import FORMATS, PROVIDERS, create_session
    from asinfer.engine.bundle import read_manifest
    from asinfer.trainer.bundle import write_bundle

    manifest = read_manifest(bundle / "manifest.json")
    done = {}
    with tempfile.TemporaryDirectory(prefix=".asinfer-explain-", dir=bundle) as tmp:
        for art in manifest.artifacts:
            if FORMATS[art.format].runtime != "onnxruntime":
                continue
            staged = Path(tmp) / art.file
            shutil.copyfile(bundle / art.file, staged)
            done[art.format] = add_explanation_outputs(staged)
            before, after = (create_session(str(f), PROVIDERS["cpu"]) for f in (bundle / art.file, staged))
            same = np.array_equal(*(s.run(["probability"], {"image": probe})[0] for s in (before, after)))
            if not same:
                raise ValueError(f"{art.format}: probabilities changed with the explanation outputs; nothing written")
        for fmt, record in done.items():
            if record.get("applied"):
                shutil.copyfile(Path(tmp) / manifest.artifact(fmt).file, bundle / manifest.artifact(fmt).file)
    write_bundle(bundle, manifest, {a.format: a.file for a in manifest.artifacts})
    return done


def main(argv: list[str] | None = None) -> None:
    from asinfer.engine import Preprocessor, load_slices
    from asinfer.trainer.phantoms import generate_series

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    args = parser.parse_args(argv)
    from asinfer.engine.bundle import read_manifest

    spec = read_manifest(args.bundle / "manifest.json").input
    series = [generate_series(seed, slices=4, positive=bool(seed % 2)) for seed in range(4)]
    pre = Preprocessor(size=(spec.height, spec.width))
    probe = np.stack([s.image for s in load_slices([img for x in series for img in x.images], pre)])[..., None]
    for fmt, record in explain_bundle(args.bundle, probe).items():
        print(f"{fmt}: {record}")


if __name__ == "__main__":
    main()
