"""The classifier: one result per slice, in order, errors kept, numbers checked against onnx's reference evaluator."""

from __future__ import annotations

import shutil
import threading

import cv2
import numpy as np
import pytest

from asinfer import engine

from conftest import SIZE, dicom_file, rng_image


def reference_probability(bundle, image_u8: np.ndarray) -> float:
    """Independent path: plain OpenCV preprocessing + onnx.reference on the fp32 graph."""
    import onnx  # the dev extra; a missing one must fail, not skip
    from onnx.reference import ReferenceEvaluator

    pre = cv2.createCLAHE(2.0, (8, 8)).apply(image_u8)
    pre = cv2.resize(pre, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    model = onnx.load(str(bundle / "model.fp32.onnx"))
    (prob,) = ReferenceEvaluator(model).run(None, {"image": pre[None, :, :, None]})
    return float(prob[0, 0])


def test_probability_matches_reference_implementation(tiny_bundle, classifier):
    img = rng_image((120, 100), seed=11)
    (result,) = classifier.predict(img)
    assert result.ok and result.frame == 0 and result.source == "<array 0>"
    assert result.probability == pytest.approx(reference_probability(tiny_bundle, img), abs=1e-5)
    assert result.label == ("AS" if result.probability >= 0.5 else "no AS")


def test_int8_artifact_agrees_with_fp32(tiny_bundle, classifier):
    int8 = engine.load(tiny_bundle, provider="cpu")
    images = [rng_image((64, 64), seed=s) for s in range(6)]
    p32 = [p.probability for p in classifier.predict(images)]
    p8 = [p.probability for p in int8.predict(images)]
    np.testing.assert_allclose(p8, p32, atol=0.05)


def test_mirror_average_is_the_mean_over_the_slice_and_its_mirror(tmp_path, classifier):
    """output.mirror_average: a probability is the mean of the graph's outputs for the slice and for its
    left-right mirror, so a mirrored slice gets the same answer; the graph alone answers differently."""
    from asinfer.trainer.tiny import write_tiny_bundle

    write_tiny_bundle(tmp_path / "mirrored", size=SIZE, formats=("onnx-fp32",), mirror_average=True)
    mirrored = engine.load(tmp_path / "mirrored", provider="cpu", threads=2)
    assert mirrored.manifest.output.mirror_average and not classifier.manifest.output.mirror_average
    batch = np.stack([rng_image((SIZE, SIZE), seed=s) for s in range(5)])[..., None]
    flipped = np.ascontiguousarray(batch[:, :, ::-1])
    plain, plain_flipped = classifier.run(batch), classifier.run(flipped)
    assert np.abs(plain - plain_flipped).max() > 1e-3  # the tiny graph is not mirror-symmetric
    averaged = mirrored.run(batch)
    assert averaged.dtype == np.float32 and averaged.shape == (5,)
    np.testing.assert_allclose(averaged, (plain + plain_flipped) / 2, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(mirrored.run(flipped), averaged)
    np.testing.assert_array_equal(mirrored.run_graph(batch), plain)
    img = rng_image((120, 100), seed=3)
    (p,) = mirrored.predict(img)
    assert p.probability == pytest.approx(float(mirrored.run(mirrored.preprocessor([img]))[0]), abs=1e-7)


def test_every_input_yields_rows_in_order(tmp_path, classifier):
    cv2.imwrite(str(tmp_path / "a.png"), rng_image((50, 50)))
    (tmp_path / "bad.png").write_text("oops")
    sources = [tmp_path / "a.png", dicom_file("examples_ybr_color.dcm"), tmp_path / "bad.png",
               tmp_path / "missing.dcm", dicom_file("rtplan.dcm"), rng_image((40, 40, 3))]
    results = classifier.predict(sources, batch_size=4)
    assert [r.source for r in results] == (
        [str(sources[0])] + [str(sources[1])] * 30 + [str(s) for s in sources[2:5]] + ["<array 5>"])
    assert [r.frame for r in results[1:31]] == list(range(30))
    assert [r.reason for r in results[31:34]] == ["not-an-image", "not-found", "no-pixel-data"]
    assert all(r.ok for r in results[:31]) and results[-1].ok
    assert all(r.probability is None and r.label is None for r in results if not r.ok)


def test_batch_size_does_not_change_results(classifier):
    images = [rng_image((70 + i, 60), seed=i) for i in range(7)]
    one = [p.probability for p in classifier.predict(images, batch_size=1)]
    three = [p.probability for p in classifier.predict(images, batch_size=3)]
    np.testing.assert_allclose(three, one, atol=1e-6)


def test_folder_walk_and_empty_folder(tmp_path, classifier):
    (tmp_path / "series" / "empty").mkdir(parents=True)
    for i in range(3):
        shutil.copy(dicom_file("MR_small.dcm"), tmp_path / "series" / f"IM{i}")
    (tmp_path / "series" / "notes.txt").write_text("skipped in walks")
    results = classifier.predict([tmp_path / "series"])
    assert [r.source.rsplit("/", 1)[-1] for r in results] == ["IM0", "IM1", "IM2"]
    (empty,) = classifier.predict(tmp_path / "series" / "empty")
    assert empty.reason == "empty"


def test_threshold_override(tiny_bundle):
    img = rng_image((64, 64), seed=2)
    p = engine.load(tiny_bundle, provider="cpu").predict(img)[0].probability
    assert engine.load(tiny_bundle, threshold=min(1.0, p + 0.01)).predict(img)[0].label == "no AS"
    assert engine.load(tiny_bundle, threshold=max(0.0, p - 0.01)).predict(img)[0].label == "AS"
    with pytest.raises(ValueError, match="outside"):
        engine.load(tiny_bundle, threshold=2.0)


def test_concurrent_callers_get_their_own_answers(classifier):
    images = [rng_image((64, 64), seed=s) for s in range(8)]
    expected = [p.probability for p in classifier.predict(images)]
    results: dict[int, list] = {}

    def worker(k: int) -> None:
        order = images[k:] + images[:k]
        results[k] = [p.probability for p in classifier.predict(order, batch_size=3)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, got in results.items():
        np.testing.assert_allclose(got, expected[k:] + expected[:k], atol=1e-6)


def test_unexpected_reader_failure_is_reported_not_raised(classifier, monkeypatch, tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), rng_image((20, 20)))

    def boom(*args, **kwargs):
        raise IndexError("decoder bug")

    monkeypatch.setattr("asinfer.engine._slices.open_reader", boom)
    (result,) = classifier.predict(tmp_path / "a.png")
    assert result.reason == "internal" and "IndexError: decoder bug" in result.error


def test_bad_arguments(classifier):
    with pytest.raises(ValueError, match="batch_size"):
        classifier.predict([], batch_size=0)
    with pytest.raises(TypeError, match="paths, numpy arrays or Frames"):
        classifier.predict([42])
