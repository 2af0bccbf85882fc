"""asinfer serve: the DICOM node, over real sockets on localhost (ephemeral ports), with the tiny model.

Each test runs its own node on its own spool (under a folder name with spaces); series are phantom
DICOM series (the trainer's writer) or pydicom's real MR test files.
"""

from __future__ import annotations

import errno
import json
import logging
import time
from pathlib import Path

import pydicom
import pytest

from asinfer import engine

pynetdicom = pytest.importorskip("pynetdicom", reason="needs the node extra (the dev extra installs it)")
pytest.importorskip("highdicom", reason="needs the node extra (the dev extra installs it)")

from asinfer.engine.node import OUT_OF_RESOURCES, Node, Spool, load_config, send_c_store  # noqa: E402

from conftest import dicom_file  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "models" / "asinfer-tiny"
QUIET = 0.3


@pytest.fixture(scope="module")
def clf():
    return engine.load(TINY, provider="cpu", threads=1)


def write_series(folder: Path, seed: int, slices: int = 5, size: int = 64) -> list[Path]:
    """A phantom DICOM series (one SeriesInstanceUID per seed), one file a slice."""
    from asinfer.trainer.phantoms import generate_series, write_dicom_slice

    folder.mkdir(parents=True, exist_ok=True)
    series = generate_series(seed, slices=slices, size=size, positive=bool(seed % 2))
    paths = [folder / f"slice-{i:02d}.dcm" for i in range(slices)]
    for i, path in enumerate(paths):
        write_dicom_slice(path, series, i)
    return paths


@pytest.fixture(scope="module")
def series5(tmp_path_factory) -> list[Path]:
    return write_series(tmp_path_factory.mktemp("series"), seed=3)


def node_config(tmp_path: Path, **changes):
    settings = dict(host="127.0.0.1", port=0, spool=tmp_path / "spool with spaces", quiet_period=QUIET)
    return load_config(None, **{**settings, **changes})


@pytest.fixture()
def node(tmp_path, clf):
    with Node(node_config(tmp_path), clf) as running:
        yield running


def associate(port: int, datasets=(), calling: str = "SCANNER", called: str = "ASINFER"):
    """An association proposing the SOP classes and transfer syntaxes of ``datasets`` (and Verification)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sop_class, syntax in sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}):
        ae.add_requested_context(sop_class, syntax)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title=called)


def send(port: int, datasets, **kwargs) -> list[int]:
    """C-STORE each dataset over one association; their statuses."""
    datasets = [pydicom.dcmread(d) if isinstance(d, (str, Path)) else d for d in datasets]
    assoc = associate(port, datasets, **kwargs)
    assert assoc.is_established
    try:
        return [int(send_c_store(assoc, ds).Status) for ds in datasets]
    finally:
        assoc.release()


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def runs_in(spool: Spool, state: str, n: int = 1):
    return wait_for(lambda: len(spool.runs(state)) >= n and spool.runs(state), what=f"{n} run(s) {state}")


# --- receiving ----------------------------------------------------------------------------------------------


def test_echo_then_a_series_end_to_end_gives_sr_and_result(node, series5):
    assoc = associate(node.port)
    assert assoc.is_established and int(assoc.send_c_echo().Status) == 0
    assoc.release()

    assert send(node.port, series5) == [0x0000] * 5
    (run,) = runs_in(node.spool, "done")
    assert (run.run, run.n_instances, run.n_duplicates, run.attempts) == (1, 5, 0, 1)
    folder = node.spool.root / run.results
    result = json.loads((folder / "result.json").read_text())
    assert result["series"]["n_slices"] == 5 and result["series"]["label"] == run.label and not result["late"]
    sr = pydicom.dcmread(folder / "sr.dcm")
    source = pydicom.dcmread(series5[0], stop_before_pixels=True)
    assert sr.StudyInstanceUID == source.StudyInstanceUID and "NOT FOR DIAGNOSTIC USE" in sr.SeriesDescription
    stored = sorted(p.name for p in (node.spool.instances / source.SeriesInstanceUID).iterdir())
    assert stored == sorted(f"{pydicom.dcmread(p).SOPInstanceUID}.dcm" for p in series5)
    assert node.spool.counters()["instances"] == 5 and not list(node.spool.results.glob(".tmp-*"))


def test_instances_are_stored_as_the_sender_encoded_them(node):
    mr = dicom_file("MR_small.dcm")  # a real scanner file, Explicit VR Little Endian
    assert send(node.port, [mr]) == [0]
    ds = pydicom.dcmread(mr)
    stored = pydicom.dcmread(node.spool.instances / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm")
    assert stored.PixelData == ds.PixelData and stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


SYNTAXES = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
            "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]


def test_every_decoded_transfer_syntax_is_accepted_kept_as_sent_and_decided(node):
    """pydicom's MR_small in six syntaxes, made six instances of one series: stored as sent, all read."""
    from pydicom.uid import generate_uid

    sent = []
    for n, name in enumerate(SYNTAXES):
        ds = pydicom.dcmread(dicom_file(name))
        ds.SOPInstanceUID, ds.InstanceNumber = generate_uid(), n + 1
        sent.append(ds)
    assert send(node.port, sent) == [0] * len(sent)
    (run,) = runs_in(node.spool, "done")
    for ds in sent:
        stored = pydicom.dcmread(node.spool.instances / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm")
        assert stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    series = json.loads((node.spool.root / run.results / "result.json").read_text())["series"]
    assert (series["n_slices"], series["n_failed"]) == (len(SYNTAXES), 0)


def test_a_syntax_the_engine_cannot_decode_is_refused_at_negotiation_and_settings_apply(tmp_path, clf):
    from asinfer.engine.node import build_ae

    lossy12 = pydicom.dcmread(dicom_file("JPEG-lossy.dcm"))  # 12-bit JPEG Extended: needs a GPL plugin
    with Node(node_config(tmp_path, max_associations=3, max_pdu_size=65536), clf, process=False) as node:
        assoc = associate(node.port, [lossy12])
        assert assoc.is_established
        assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == ["1.2.840.10008.1.1"]  # Verification only
        assoc.release()
    ae = build_ae(node.config)
    assert (ae.maximum_associations, ae.maximum_pdu_size) == (3, 65536)


def test_duplicate_keeps_the_first_copy_and_is_counted(node, series5):
    first = pydicom.dcmread(series5[0])
    second = pydicom.dcmread(series5[0])
    second.SeriesDescription = "a second copy with other content"
    assert send(node.port, [first, second, first]) == [0, 0, 0]
    ds_path = node.spool.instances / first.SeriesInstanceUID / f"{first.SOPInstanceUID}.dcm"
    assert pydicom.dcmread(ds_path).SeriesDescription == first.SeriesDescription
    counts = node.spool.counters()
    assert (counts["instances"], counts["duplicates"]) == (1, 2)
    assert node.spool.runs()[0].n_duplicates == 2 and node.metrics.count("instances_duplicate") == 2


def test_concurrent_associations_sending_the_same_series_store_each_instance_once(node, series5):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(lambda _: send(node.port, series5), range(3)))
    assert statuses == [[0] * 5] * 3
    counts = node.spool.counters()
    assert (counts["instances"], counts["duplicates"]) == (5, 10)
    (run,) = runs_in(node.spool, "done")
    assert (run.n_instances, run.n_duplicates) == (5, 10)


def test_a_failed_spool_write_answers_out_of_resources_never_success(node, series5, monkeypatch):
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the disk refuses: the instance cannot be made durable
    assert send(node.port, series5[:2]) == [OUT_OF_RESOURCES] * 2 == [0xA700] * 2
    assert node.spool.counters()["instances"] == 0 and not node.spool.runs()
    assert not [p for p in node.spool.instances.rglob("*") if p.is_file()]  # no temporary file left
    monkeypatch.undo()  # the disk has room again: the sender's retry is stored
    assert send(node.port, series5[:2]) == [0, 0]
    assert node.spool.counters()["instances"] == 2


def test_unknown_calling_ae_is_rejected_at_association(tmp_path, clf, series5):
    with Node(node_config(tmp_path, allow_ae=["SCANNER"]), clf, process=False) as node:
        intruder = associate(node.port, calling="INTRUDER")
        assert intruder.is_rejected and not intruder.is_established
        assert send(node.port, series5[:1], calling="SCANNER") == [0]
        assert node.metrics.count("associations_rejected") == 1


def test_a_dataset_without_series_uid_is_refused_and_the_node_keeps_serving(node, series5):
    ds = pydicom.dcmread(series5[0])
    del ds.SeriesInstanceUID
    assert send(node.port, [ds, series5[1]]) == [0xA900, 0]
    assert node.spool.counters()["instances"] == 1


def test_garbage_on_the_socket_and_a_non_image_object_do_not_stop_the_node(node, series5):
    import socket

    raw = socket.create_connection(("127.0.0.1", node.port), timeout=5)  # not DICOM, and left open meanwhile
    raw.sendall(b"\x07\x00GET / HTTP/1.1\r\n\r\n" + bytes(range(256)))
    report = pydicom.dcmread(dicom_file("reportsi.dcm"))  # an SR: stored, then failed with its reason
    assert send(node.port, [report]) == [0]
    assert send(node.port, series5) == [0] * 5
    failed = runs_in(node.spool, "failed")
    done = runs_in(node.spool, "done")
    assert failed[0].reason == "no-slices" and failed[0].attempts == 1 and done[0].n_instances == 5
    raw.close()
    node.stop(grace=0.2)  # the broken association lingers for pynetdicom's ARTIM timer: do not wait for it


def test_a_node_that_cannot_listen_fails_to_start_and_frees_its_spool(tmp_path, clf):
    with Node(node_config(tmp_path / "a"), clf, process=False) as first:
        taken = load_config(None, host="127.0.0.1", port=first.port, spool=tmp_path / "b")
        with pytest.raises(OSError):
            Node(taken, clf).start()
        Spool.open(tmp_path / "b").close()  # the failed node let go of its spool


# --- series completion and selection ---------------------------------------------------------------------


def test_a_series_completes_after_the_quiet_period_not_before(tmp_path, clf, series5):
    quiet = 1.0  # longer than the tests' usual 0.3 s: a busy machine must not end the period between two sends
    with Node(node_config(tmp_path, quiet_period=quiet), clf, process=False) as node:
        send(node.port, series5[:2])
        time.sleep(quiet / 4)
        assert send(node.port, series5[2:]) == [0] * 3  # within the quiet period: the same run
        last = time.monotonic()
        assert [r.state for r in node.spool.runs()] == ["receiving"]
        (run,) = runs_in(node.spool, "complete")
        assert time.monotonic() - last >= quiet * 0.9 and run.n_instances == 5


def test_a_late_instance_opens_a_new_marked_run_of_the_whole_series(tmp_path, clf, series5):
    with Node(node_config(tmp_path), clf) as node:
        send(node.port, series5[:4])
        (first,) = runs_in(node.spool, "done")
        assert send(node.port, series5[4:]) == [0]
        done = runs_in(node.spool, "done", 2)
        late = done[1]
        assert (late.run, late.late, late.n_instances) == (2, True, 1)
        result = json.loads((node.spool.root / late.results / "result.json").read_text())
        assert result["late"] and result["run"] == 2 and result["series"]["n_slices"] == 5
        assert late.results.endswith(".run-2") and late.results != first.results
        sr1, sr2 = (pydicom.dcmread(node.spool.root / r.results / "sr.dcm") for r in (first, late))
        assert sr1.SOPInstanceUID != sr2.SOPInstanceUID  # the second result adds to the first, not replaces it


def test_slices_predicted_while_the_series_arrives_give_the_decision_predict_series_gives(tmp_path, clf, series5):
    """The idle worker predicts a receiving series early; at completion it decides over all slices as before."""
    quiet = 2.0  # time for the early predictions before the series completes
    with Node(node_config(tmp_path, quiet_period=quiet), clf) as node:
        assert send(node.port, series5[:3]) == [0] * 3
        wait_for(lambda: node.metrics.count("instances_predicted_early") == 3, what="3 slices predicted early")
        assert [r.state for r in node.spool.runs()] == ["receiving"]
        assert send(node.port, series5[3:]) == [0] * 2
        (run,) = runs_in(node.spool, "done")
        assert node.metrics.count("instances_predicted_early") in (3, 5)  # the last two: early, or at completion
        result = json.loads((node.spool.root / run.results / "result.json").read_text())["series"]
    (expected,) = clf.predict_series(series5)
    assert (result["label"], result["n_slices"]) == (expected.label, 5)
    assert result["score"] == pytest.approx(expected.score, abs=1e-6)
    assert (result["ordered_by"], len(result["driving"])) == (expected.ordered_by, len(expected.driving))


@pytest.mark.parametrize("changes", [{"predict_early": False}, {"select": {"modality": ["CT"]}}],
                         ids=["switched-off", "selection-rule-fails"])
def test_no_early_prediction_when_switched_off_or_the_series_will_be_ignored(tmp_path, clf, series5, changes):
    with Node(node_config(tmp_path, quiet_period=1.0, **changes), clf) as node:
        assert send(node.port, series5) == [0] * 5
        runs_in(node.spool, "done" if "predict_early" in changes else "ignored")
        assert node.metrics.count("instances_predicted_early") == 0


def test_a_series_that_fails_a_selection_rule_is_recorded_and_never_processed(tmp_path, clf, series5):
    config = load_config(None, host="127.0.0.1", port=0, spool=tmp_path / "spool", quiet_period=QUIET,
                         select={"modality": ["CT"]})
    with Node(config, clf) as node:
        send(node.port, series5)
        (run,) = runs_in(node.spool, "ignored")
        assert run.reason == "not-selected" and "Modality 'MR'" in run.message
        time.sleep(QUIET)
        assert node.worker.processed == 0 and not list(node.spool.results.iterdir())


@pytest.mark.parametrize("select, why", [
    ({"series_description": "(?i)stir"}, None),
    ({"series_description": "^T1"}, "SeriesDescription does not match"),
    ({"body_part": ["sij", "PELVIS"]}, None),
    ({"body_part": ["KNEE"]}, "BodyPartExamined 'SIJ'"),
    ({"image_type": ["derived"]}, None),
    ({"image_type": ["ORIGINAL", "PRIMARY"]}, "ImageType lacks ORIGINAL, PRIMARY"),
    ({"min_slices": 6}, "5 slice(s), fewer than min-slices 6"),
])
def test_selection_rules(select, why):
    from asinfer.engine.node import Selection

    header = {"modality": "MR", "description": "SYNTHETIC PHANTOM - STIR axial SIJ", "body_part": "SIJ",
              "image_type": "DERIVED\\SECONDARY"}
    found = Selection(**{k: tuple(v) if isinstance(v, list) else v for k, v in select.items()}).check(header, 5)
    assert (found is None) if why is None else why in found


# --- crash safety ----------------------------------------------------------------------------------------


def test_restart_processes_what_was_acknowledged_and_not_what_was_done(tmp_path, clf, series5):
    config = node_config(tmp_path)
    other = write_series(tmp_path / "other", seed=8, slices=3)
    with Node(config, clf, process=False) as node:  # receives and completes, processes nothing
        send(node.port, series5)
        send(node.port, other)
        runs_in(node.spool, "complete", 2)
    spool = Spool.open(config.spool)  # a crash mid-processing: the first run claimed, half its results written
    claimed = spool.claim_next()
    spool.temp_folder(claimed).mkdir()
    (spool.temp_folder(claimed) / "sr.dcm").write_bytes(b"half")
    spool.close()

    with Node(config, clf) as node:
        done = runs_in(node.spool, "done", 2)
        assert [r.attempts for r in done] == [2, 1] and not list(node.spool.results.glob(".tmp-*"))
        stamps = {r.id: (node.spool.root / r.results / "sr.dcm").stat().st_mtime_ns for r in done}
    with Node(config, clf) as node:  # a third start: nothing to do, nothing redone
        time.sleep(QUIET * 2)
        assert node.worker.processed == 0
        assert {r.id: (node.spool.root / r.results / "sr.dcm").stat().st_mtime_ns
                for r in node.spool.runs("done")} == stamps


def test_a_run_whose_results_were_renamed_before_the_crash_is_marked_done_without_inference(tmp_path, clf, series5):
    config = node_config(tmp_path)
    with Node(config, clf) as node:
        send(node.port, series5)
        (run,) = runs_in(node.spool, "done")
    spool = Spool.open(config.spool)  # as if the node died between the rename and the state change
    spool._db.execute("UPDATE runs SET state = 'processing'")
    spool.close()

    class NoInference:
        def predict_series(self, *args, **kwargs):
            raise AssertionError("inference ran again")

    with Node(config, NoInference()) as node:
        (again,) = runs_in(node.spool, "done")
        assert again.label == run.label and again.results == run.results


def test_a_series_that_keeps_crashing_the_node_is_failed_after_max_attempts(tmp_path, clf, series5):
    config = node_config(tmp_path, max_attempts=2)
    with Node(config, clf, process=False) as node:
        send(node.port, series5[:2])
        runs_in(node.spool, "complete")
    for _ in range(2):  # two starts that die mid-processing
        spool = Spool.open(config.spool)
        spool.recover(config.max_attempts)
        assert spool.claim_next() is not None
        spool.close()
    spool = Spool.open(config.spool)
    assert spool.recover(config.max_attempts)["failed"] == 1
    (run,) = spool.runs("failed")
    assert run.reason == "interrupted" and "2 time(s)" in run.message
    spool.close()


def test_one_node_per_spool(tmp_path):
    spool = Spool.open(tmp_path / "spool")
    with pytest.raises(OSError, match="in use by another asinfer serve"):
        Spool.open(tmp_path / "spool")
    spool.close()
    Spool.open(tmp_path / "spool").close()


def test_uids_chosen_by_the_sender_cannot_name_a_path_outside_the_spool(tmp_path):
    spool = Spool.open(tmp_path / "spool")
    assert spool.store("../../escape", "../..", {}, b"data") == "stored"
    files = [p for p in (tmp_path / "spool").rglob("*") if p.is_file() and p.suffix == ".dcm"]
    assert len(files) == 1 and files[0].parent.parent == spool.instances
    spool.close()


# --- logs ------------------------------------------------------------------------------------------------


def test_logs_carry_no_patient_data_and_no_uids(tmp_path, clf, series5, caplog):
    caplog.set_level(logging.DEBUG, logger="asinfer")
    named = []
    for path in series5:
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "PID-0042-SECRET", "19700101"
        named.append(ds)
    with Node(node_config(tmp_path), clf) as node:
        send(node.port, named + named[:1])
        runs_in(node.spool, "done")
    text = caplog.text
    assert "event=run-done" in text and "event=duplicate-instance" in text
    for secret in ("Doe", "Jane", "PID-0042", "19700101", named[0].SeriesInstanceUID, named[0].SOPInstanceUID,
                   named[0].StudyInstanceUID):
        assert secret not in text


# --- the command line ----------------------------------------------------------------------------------------


def test_serve_print_config_merges_file_and_flags(tmp_path):
    from typer.testing import CliRunner

    from asinfer.engine.cli import app

    toml = tmp_path / "node.toml"
    toml.write_text('ae-title = "FROMFILE"\nport = 104\nquiet_period = 2\nallow-ae = ["A"]\n'
                    '[select]\nmodality = "MR"\nmin-slices = 4\n')
    result = CliRunner().invoke(app, ["serve", "--config", str(toml), "--port", "5000", "--allow-ae", "B",
                                      "--allow-ae", "C", "--print-config"])
    assert result.exit_code == 0, result.output
    import tomllib

    printed = tomllib.loads(result.stdout)
    assert (printed["ae-title"], printed["port"], printed["quiet-period"], printed["allow-ae"]) == \
        ("FROMFILE", 5000, 2.0, ["B", "C"])
    assert printed["select"] == {"modality": ["MR"], "body-part": [], "image-type": [], "min-slices": 4}
    again = tmp_path / "printed.toml"
    again.write_text(result.stdout)
    assert load_config(again) == load_config(toml, port=5000, allow_ae=["B", "C"])  # it reads back the same


@pytest.mark.parametrize("text, message", [
    ("quiet-perod = 2\n", "did you mean quiet-period?"),
    ("port = '104'\n", "port must be int"),
    ("ae-title = 'A\\\\B'\n", "is not an AE title"),
    ("[select]\nseries-description = '('\n", "is not a regular expression"),
    ("port = \n", "is not valid TOML"),
])
def test_serve_config_errors_exit_2_and_say_what_to_fix(tmp_path, text, message):
    from typer.testing import CliRunner

    from asinfer.engine.cli import app

    toml = tmp_path / "node.toml"
    toml.write_text(text)
    result = CliRunner().invoke(app, ["serve", "--config", str(toml), "--print-config"])
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_serve_without_the_node_extra_names_it(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from asinfer.engine.cli import app

    monkeypatch.setitem(__import__("sys").modules, "pynetdicom", None)
    result = CliRunner().invoke(app, ["serve", "--spool", str(tmp_path / "s"), "--port", "0"])
    assert result.exit_code == 2 and "the 'node' extra: pip install 'asinfer[node]'" in result.stderr


# --- the outbox: results stored at a destination ---------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pacs:
    """A destination Storage SCP on ``port`` that keeps what it receives (and answers ``status``)."""

    def __init__(self, port: int, status: int = 0x0000, syntaxes: list[str] | None = None) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.received: list[pydicom.Dataset] = []
        self.syntaxes: list[str] = []  # the transfer syntax each was received in

        def store(event) -> int:
            self.received.append(event.dataset)
            self.syntaxes.append(str(event.context.transfer_syntax))
            return status

        self.ae = AE(ae_title="PACS")
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, syntaxes or context.transfer_syntax)
        self.server = self.ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])

    def close(self) -> None:
        self.ae.shutdown()


@pytest.mark.parametrize("accepts, arrives", [
    (None, "1.2.840.10008.1.2.1"),  # pynetdicom's default list puts Implicit first: the file is still sent as written
    (["1.2.840.10008.1.2"], "1.2.840.10008.1.2"),  # a destination that takes only Implicit VR gets it converted
], ids=["as-written", "implicit-only-destination"])
def test_results_reach_the_destination_in_the_syntax_it_accepts(tmp_path, clf, series5, accepts, arrives):
    port = free_port()
    pacs = Pacs(port, syntaxes=accepts)
    try:
        with Node(node_config(tmp_path, destination=f"PACS@127.0.0.1:{port}"), clf) as node:
            send(node.port, series5)
            (run,) = runs_in(node.spool, "sent")
        local = pydicom.dcmread(node.spool.root / run.results / "sr.dcm")
        assert pacs.syntaxes == [arrives] and pacs.received[0].SOPInstanceUID == local.SOPInstanceUID
        assert pacs.received[0].ContentSequence[0].ConceptNameCodeSequence[0].CodeValue == \
            local.ContentSequence[0].ConceptNameCodeSequence[0].CodeValue
    finally:
        pacs.close()


def test_outbox_keeps_results_across_a_restart_and_sends_each_once_when_the_destination_comes_up(
        tmp_path, clf, series5):
    port = free_port()  # nothing listens there yet: the destination is down
    config = node_config(tmp_path, destination=f"PACS@127.0.0.1:{port}", retry_initial=0.1, retry_max=0.2)
    with Node(config, clf) as node:
        send(node.port, series5)
        (run,) = runs_in(node.spool, "sending")
        wait_for(lambda: node.spool.due(now=float("inf"))[0].attempts >= 2, what="two failed tries")
        assert node.spool.counters()["outbox"] == 1
    pacs = Pacs(port)
    try:
        with Node(config, clf) as node:  # the outbox is on disk: the new node sends what the old one could not
            (sent,) = runs_in(node.spool, "sent")
            assert node.spool.counters()["outbox"] == 0 and node.worker.processed == 0
            time.sleep(0.5)  # longer than the back-off: nothing is sent twice
        (sr,) = pacs.received
        local = pydicom.dcmread(node.spool.root / run.results / "sr.dcm")
        assert (sr.SOPInstanceUID, sr.SOPClassUID) == (local.SOPInstanceUID, local.SOPClassUID)
    finally:
        pacs.close()


def test_a_destination_that_keeps_refusing_a_result_fails_the_run_after_max_send_attempts(tmp_path, clf, series5):
    port = free_port()
    pacs = Pacs(port, status=0xC000)  # "cannot understand", every time
    config = node_config(tmp_path, destination=f"PACS@127.0.0.1:{port}", retry_initial=0.05, retry_max=0.1,
                         max_send_attempts=2)
    try:
        with Node(config, clf) as node:
            send(node.port, series5[:2])
            (run,) = runs_in(node.spool, "failed")
            assert run.reason == "send-failed" and "0xC000" in run.message and len(pacs.received) == 2
    finally:
        pacs.close()


@pytest.mark.parametrize("text", ["PACS@host", "@host:104", "PACS@:104", "PACS@host:0", "TOO-LONG-AE-TITLE-X@h:1"])
def test_a_destination_that_is_not_aet_at_host_port_is_refused(text):
    with pytest.raises(ValueError, match="is not AET@HOST:PORT"):
        load_config(None, destination=text)


def test_destination_parses_names_and_ipv6_and_prints_back():
    from asinfer.engine.node import Destination

    for text, host in [("PACS@10.0.0.5:104", "10.0.0.5"), ("PACS@[fd00::5]:11112", "fd00::5"), ("A@pacs.local:1", "pacs.local")]:
        assert Destination.parse(text).host == host and str(Destination.parse(text)) == text


# --- pynetdicom's reactor race (the sender's C-STORE) ------------------------------------------------------------


class RacyAssociation:
    """pynetdicom's reactor/send_c_store pause protocol, with the race's window held open on purpose.

    The reactor loop is pynetdicom's (sleep, flag up, wait at the checkpoint, flag down, take a message);
    ``window`` stalls it between passing the checkpoint and lowering the flag, where a real reactor is
    caught by a thread switch under load. send_c_store is pynetdicom's: clear the checkpoint, wait for
    the flag, send, wait for the response (here 0.1 s instead of the DIMSE timeout), resume the reactor.
    """

    def __init__(self, window: float) -> None:
        import queue
        import threading

        self._reactor_checkpoint = threading.Event()
        self._reactor_checkpoint.set()
        self._is_paused = False
        self.responses: queue.Queue = queue.Queue()
        self.stolen = 0
        self._kill = False
        self.window = window
        self.thread = threading.Thread(target=self._reactor, daemon=True)
        self.thread.start()

    def _reactor(self) -> None:
        import queue

        while not self._kill:
            time.sleep(0.001)
            self._is_paused = True
            self._reactor_checkpoint.wait()
            time.sleep(self.window)  # past the checkpoint, the flag still up: send_c_store thinks it is paused
            self._is_paused = False
            try:
                self.responses.get_nowait()
                self.stolen += 1  # "Received unexpected C-STORE service message"
            except queue.Empty:
                pass

    def send_c_store(self, dataset):
        import queue

        self._reactor_checkpoint.clear()
        while not self._is_paused:
            time.sleep(0.0001)
        self.responses.put(dataset)  # the peer's answer is in the queue ...
        time.sleep(0.002)  # ... while this thread still encodes and sends (it has not begun to wait)
        try:
            answer = self.responses.get(timeout=0.1)
        except queue.Empty:
            answer = None  # DIMSE timeout
        self._reactor_checkpoint.set()
        return answer


def test_send_c_store_parks_the_reactor_so_it_cannot_take_the_response():
    plain, parked = RacyAssociation(window=0.003), RacyAssociation(window=0.003)
    try:
        lost_plain = sum(plain.send_c_store(n) is None for n in range(20))
        lost_parked = sum(send_c_store(parked, n) is None for n in range(40))
    finally:
        plain._kill = parked._kill = True
    assert lost_plain > 0  # the model reproduces the race pynetdicom's own call loses responses to
    assert lost_parked == 0 and parked.stolen == 0


def test_send_c_store_on_a_real_association(tmp_path, series5):
    port = free_port()
    pacs = Pacs(port)
    try:
        assert send(port, series5 * 4, called="PACS") == [0] * 20  # the tests' send() uses it
        assert len(pacs.received) == 20
    finally:
        pacs.close()
