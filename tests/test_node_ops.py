"""asinfer serve in operation: /metrics and /healthz scraped over a real socket, completion at once when the
expected count is known, retention, TLS (self-signed certificates made here with openssl), the peer allow-list."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest

pytest.importorskip("pynetdicom", reason="needs the node extra (the dev extra installs it)")
pytest.importorskip("highdicom", reason="needs the node extra (the dev extra installs it)")

from asinfer import engine  # noqa: E402
from asinfer.engine.node import METRICS, SCU_SOP_CLASSES, Node, Selection, Spool  # noqa: E402

from test_node import TINY, Pacs, associate, free_port, node_config, runs_in, send, wait_for, write_series  # noqa: E402


@pytest.fixture(scope="module")
def clf():
    return engine.load(TINY, provider="cpu", threads=1)


@pytest.fixture(scope="module")
def series5(tmp_path_factory) -> list[Path]:
    return write_series(tmp_path_factory.mktemp("series"), seed=3)


def scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    """GET ``path`` from the node's HTTP endpoint: (status, content type, body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def samples(text: str) -> dict[str, float]:
    """The exposition's samples, ``name{labels}`` -> value; every line checked against the text format."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.split()[1] in ("HELP", "TYPE"), line
            continue
        name, value = line.rsplit(" ", 1)
        found[name] = float(value)
    return found


# --- /metrics and /healthz -------------------------------------------------------------------------------------


def test_metrics_and_healthz_are_served_over_http_and_count_what_happened(tmp_path, clf, series5):
    with Node(node_config(tmp_path, metrics_port=0), clf) as node:
        assert send(node.port, series5 + series5[:1]) == [0] * 6
        runs_in(node.spool, "done")
        status, content_type, text = scrape(node.metrics_port)
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        got = samples(text)
        assert got["asinfer_node_instances_received_total"] == 5
        assert got["asinfer_node_instances_duplicate_total"] == 1
        assert got["asinfer_node_series_completed_total"] == got["asinfer_node_series_processed_total"] == 1
        assert got["asinfer_node_associations_accepted_total"] == 1
        assert got["asinfer_node_queue_depth"] == got["asinfer_node_outbox_depth"] == 0
        assert got['asinfer_node_runs{state="done"}'] == 1 and got["asinfer_node_spool_free_bytes"] > 0
        assert got["asinfer_node_inference_seconds_count"] == 1
        durable = got['asinfer_node_series_latency_seconds_count{until="durable"}']
        assert durable == got['asinfer_node_series_latency_seconds_bucket{until="durable",le="+Inf"}'] == 1
        assert got['asinfer_node_series_latency_seconds_sum{until="durable"}'] >= node.config.quiet_period * 0.9
        assert got['asinfer_node_series_latency_seconds_count{until="sent"}'] == 0
        for metric in METRICS:  # every family in the table is exposed, with help and type
            assert f"# TYPE {metric.exposed} {metric.kind}" in text

        status, content_type, body = scrape(node.metrics_port, "/healthz")
        health = json.loads(body)
        assert (status, health["status"], content_type) == (200, "ok", "application/json")
        assert health["checks"] == {"listening": True, "monitor": True, "worker": True, "database": True}
        assert scrape(node.metrics_port, "/other")[0] == 404

        node.worker.stop()  # a worker that died: the node is not healthy any more
        node.worker.join(10)
        status, _, body = scrape(node.metrics_port, "/healthz")
        assert status == 503 and json.loads(body)["checks"]["worker"] is False


def test_metrics_count_results_sent_and_their_end_to_end_latency(tmp_path, clf, series5):
    port = free_port()
    pacs = Pacs(port)
    try:
        config = node_config(tmp_path, metrics_port=0, destination=f"PACS@127.0.0.1:{port}")
        with Node(config, clf) as node:
            send(node.port, series5[:3])
            runs_in(node.spool, "sent")
            got = samples(scrape(node.metrics_port)[2])
        assert got["asinfer_node_series_sent_total"] == 1 and got["asinfer_node_results_sent_total"] == len(pacs.received)
        assert {str(ds.SOPClassUID) for ds in pacs.received} <= set(SCU_SOP_CLASSES)  # as the statement says
        assert got['asinfer_node_series_latency_seconds_count{until="sent"}'] == 1
        assert got['asinfer_node_series_latency_seconds_sum{until="sent"}'] >= \
            got['asinfer_node_series_latency_seconds_sum{until="durable"}']
    finally:
        pacs.close()


# --- completion at once when the count is known -------------------------------------------------------------


@pytest.mark.parametrize("how", ["config", "ImagesInAcquisition", "NumberOfSeriesRelatedInstances"])
def test_a_series_completes_at_once_when_its_expected_count_is_reached(tmp_path, clf, series5, how):
    datasets = [pydicom.dcmread(p) for p in series5]
    if how != "config":
        for ds in datasets:
            setattr(ds, how, len(datasets))
    config = node_config(tmp_path, quiet_period=60.0, expected_instances=5 if how == "config" else 0)
    with Node(config, clf, process=False) as node:
        send(node.port, datasets[:4])
        time.sleep(0.3)
        assert [r.state for r in node.spool.runs()] == ["receiving"]  # 4 of 5: waits (the quiet period is 60 s)
        started = time.monotonic()
        send(node.port, datasets[4:])
        (run,) = runs_in(node.spool, "complete")
        assert time.monotonic() - started < 2.0 and run.n_instances == 5
        late = datasets[0].copy()
        late.SOPInstanceUID = pydicom.uid.generate_uid()
        send(node.port, [late])
        time.sleep(0.3)  # a late run waits for the quiet period whatever the count: one run per burst
        assert [r.state for r in node.spool.runs()] == ["complete", "receiving"]


def test_the_count_in_the_header_is_ignored_when_expected_from_header_is_off(tmp_path, clf, series5):
    datasets = [pydicom.dcmread(p) for p in series5]
    for ds in datasets:
        ds.ImagesInAcquisition = 2
    with Node(node_config(tmp_path, quiet_period=60.0, expected_from_header=False), clf, process=False) as node:
        send(node.port, datasets)
        time.sleep(0.3)
        assert [r.state for r in node.spool.runs()] == ["receiving"]


def test_a_series_cut_off_by_a_restart_gets_a_fresh_quiet_period_so_the_resend_joins_its_run(tmp_path, clf, series5):
    import sqlite3

    config = node_config(tmp_path, quiet_period=1.0)
    with Node(config, clf, process=False) as node:
        send(node.port, series5[:2])
    with sqlite3.connect(config.spool / "state.sqlite") as db:  # the node stayed down for an hour
        db.execute("UPDATE runs SET last_at = last_at - 3600")
    with Node(config, clf, process=False) as node:
        time.sleep(0.3)
        assert [r.state for r in node.spool.runs()] == ["receiving"]  # not completed at once
        assert send(node.port, series5) == [0] * 5  # the sender sends the whole series again
        (run,) = runs_in(node.spool, "complete")
        assert (run.run, run.n_instances, run.n_duplicates) == (1, 5, 2) and len(node.spool.runs()) == 1


# --- retention ---------------------------------------------------------------------------------------------


def _finished(spool: Spool, run, folder: str):
    results = spool.results / folder
    results.mkdir()
    (results / "sr.dcm").write_bytes(b"sr")
    return results


def test_retention_deletes_instance_files_only_of_final_series_and_keeps_the_rows(tmp_path):
    spool = Spool.open(tmp_path / "spool")
    for series, n in (("1.1", 2), ("1.2", 1), ("1.3", 2), ("1.4", 2)):
        for i in range(n):
            spool.store(f"{series}.{i}", series, {"modality": "MR"}, b"dicom")
    later = time.time() + 1000
    closed = spool.complete_quiet(0.0, Selection(min_slices=2), now=later)
    assert [r.state for r in closed] == ["complete", "ignored", "complete", "complete"]
    a, c = spool.claim_next(), spool.claim_next()  # 1.1 and 1.3 processing; 1.4 stays complete
    files = {s: list((spool.instances / s).iterdir()) for s in ("1.1", "1.2", "1.3", "1.4")}

    def kept():
        return {s for s in files if all(p.exists() for p in files[s])}

    assert spool.purge_expired(10, now=later + 100) == 1 and kept() == {"1.1", "1.3", "1.4"}  # the ignored one
    spool.finish(a, _finished(spool, a, "a"), "AS", 0.9, send=True)  # 1.1: sending, not sent yet
    spool.finish(c, _finished(spool, c, "c"), "no AS", 0.1)  # 1.3: done, results durable
    assert spool.purge_expired(10, now=later + 100) == 1 and kept() == {"1.1", "1.4"}
    assert spool.purge_expired(10_000, now=later + 100) == 0  # younger than the retention period: kept
    (item,) = spool.due(now=float("inf"))
    assert spool.sent(item)  # 1.1 sent: now it may go
    assert spool.purge_expired(10, now=later + 100) == 1 and kept() == {"1.4"}
    assert spool.purge_expired(10, now=later + 100) == 0  # nothing twice

    assert len(spool.runs()) == 4 and all(r.purged_at for r in spool.runs() if r.series_uid != "1.4")
    assert spool.store("1.1.0", "1.1", {}, b"dicom") == "duplicate"  # the rows stay: a resend is still known
    assert (spool.results / "c" / "sr.dcm").exists()  # results are not instance files: kept
    assert spool.store("1.3.9", "1.3", {}, b"late") == "stored"  # a late instance after the purge: run 2
    (late,) = spool.runs("receiving")
    assert [p.name for p in spool.instance_files(late)] == ["1.3.9.dcm"]
    spool.close()
    Spool.open(tmp_path / "spool").close()  # the recovery at start keeps the purged state as it is


def test_the_node_purges_a_processed_series_after_the_retention_period(tmp_path, clf, series5):
    with Node(node_config(tmp_path, retention_period=0.2, metrics_port=0), clf) as node:
        send(node.port, series5)
        (run,) = runs_in(node.spool, "done")
        wait_for(lambda: node.spool.runs()[0].purged_at, what="the purge")
        assert not list(node.spool.instances.rglob("*.dcm")) and (node.spool.root / run.results / "sr.dcm").exists()
        assert node.metrics.count("series_purged") == 1


def test_an_old_spool_without_the_purge_column_is_migrated(tmp_path):
    import sqlite3

    spool = Spool.open(tmp_path / "spool")
    spool.store("1.1.1", "1.1", {}, b"x")
    spool.close()
    with sqlite3.connect(tmp_path / "spool" / "state.sqlite") as db:
        db.execute("ALTER TABLE runs DROP COLUMN purged_at")
    spool = Spool.open(tmp_path / "spool")
    assert spool.runs()[0].purged_at is None
    spool.close()


# --- hostile input --------------------------------------------------------------------------------------------


def test_a_truncated_data_set_is_refused_so_a_good_resend_is_not_a_duplicate(tmp_path, clf, series5):
    data = series5[0].read_bytes()
    cut = tmp_path / "truncated.dcm"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # cut in the pixel data; pynetdicom sends what it can read
    ds = pydicom.dcmread(series5[0])
    no_pixels = pydicom.dcmread(series5[1])
    del no_pixels.PixelData
    with Node(node_config(tmp_path), clf, process=False) as node:
        assoc = associate(node.port, [ds])
        assert int(assoc.send_c_store(cut).Status) == 0xC000
        assert int(assoc.send_c_store(no_pixels).Status) == 0xC000
        assert int(assoc.send_c_store(ds).Status) == 0  # the whole instance, sent again, is stored
        assoc.release()
        stored = node.spool.instances / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert pydicom.dcmread(stored).PixelData == ds.PixelData
        assert node.metrics.count("instances_refused") == 2 and node.spool.counters()["duplicates"] == 0


# --- TLS and the peer allow-list -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (and the cryptography package is not either): no certificate to test TLS")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=asinfer test CA")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=asinfer test {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext")
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


def client_tls(pki, with_certificate: bool) -> tuple[ssl.SSLContext, str]:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca_crt"]))
    if with_certificate:
        context.load_cert_chain(str(pki["client_crt"]), str(pki["client_key"]))
    return context, "localhost"


def tls_associate(port: int, tls_args, datasets=()):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="SCANNER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="ASINFER", tls_args=tls_args)


def test_tls_associations_store_and_a_silent_or_plain_caller_does_not_block_them(tmp_path, clf, series5, pki):
    config = node_config(tmp_path, tls_cert=pki["server_crt"], tls_key=pki["server_key"])
    first = pydicom.dcmread(series5[0])
    with Node(config, clf, process=False) as node:
        silent = socket.create_connection(("127.0.0.1", node.port), timeout=5)  # connects, never says hello
        plain = associate(node.port)  # no TLS: the handshake fails, nothing DICOM happens
        assert not plain.is_established
        started = time.monotonic()
        assoc = tls_associate(node.port, client_tls(pki, with_certificate=False), [first])
        assert assoc.is_established and time.monotonic() - started < 5
        assert int(assoc.send_c_echo().Status) == 0 and int(assoc.send_c_store(first).Status) == 0
        assoc.release()
        assert node.spool.counters()["instances"] == 1 and node.metrics.count("tls_handshake_failures") >= 1
        silent.close()
        node.stop(grace=0.2)


def test_mutual_tls_requires_a_client_certificate_signed_by_the_ca(tmp_path, clf, pki):
    config = node_config(tmp_path, tls_cert=pki["server_crt"], tls_key=pki["server_key"], tls_ca=pki["ca_crt"])
    with Node(config, clf, process=False) as node:
        anonymous = tls_associate(node.port, client_tls(pki, with_certificate=False))
        assert not anonymous.is_established
        known = tls_associate(node.port, client_tls(pki, with_certificate=True))
        assert known.is_established and int(known.send_c_echo().Status) == 0
        known.release()


def test_results_go_to_a_tls_destination_that_checks_our_client_certificate(tmp_path, clf, series5, pki):
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    received = []
    pacs_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pacs_tls.load_cert_chain(str(pki["server_crt"]), str(pki["server_key"]))
    pacs_tls.load_verify_locations(cafile=str(pki["ca_crt"]))
    pacs_tls.verify_mode = ssl.CERT_REQUIRED
    pacs = AE(ae_title="PACS")
    pacs.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    pacs.start_server(("127.0.0.1", port), block=False, ssl_context=pacs_tls,
                      evt_handlers=[(evt.EVT_C_STORE, lambda event: received.append(event.dataset) or 0)])
    try:
        config = node_config(tmp_path, destination=f"PACS@127.0.0.1:{port}", destination_tls_ca=pki["ca_crt"],
                             destination_tls_cert=pki["client_crt"], destination_tls_key=pki["client_key"])
        with Node(config, clf) as node:
            send(node.port, series5[:3])
            runs_in(node.spool, "sent")
        assert [str(ds.SOPClassUID) for ds in received] == ["1.2.840.10008.5.1.4.1.1.88.34"]
    finally:
        pacs.shutdown()


def test_a_peer_outside_the_allowed_networks_is_disconnected_before_any_dicom(tmp_path, clf, series5):
    with Node(node_config(tmp_path, allow_peer=["10.9.9.0/24", "fd00::/8"]), clf, process=False) as node:
        assoc = associate(node.port)
        assert not assoc.is_established and node.metrics.count("connections_refused") == 1
        assert node.spool.counters()["instances"] == 0
    with Node(node_config(tmp_path, allow_peer=["10.9.9.0/24", "127.0.0.1"]), clf, process=False) as node:
        assert send(node.port, series5[:1]) == [0]


@pytest.mark.parametrize("address, networks, allowed", [
    ("10.0.0.7", ["10.0.0.0/24"], True), ("10.0.1.7", ["10.0.0.0/24"], False),
    ("::ffff:10.0.0.7", ["10.0.0.0/24"], True), ("fd00::5", ["fd00::/8"], True), ("fe80::1%eth0", ["fe80::/10"], True),
    ("not-an-address", ["0.0.0.0/0"], False), ("192.168.1.1", [], True),
])
def test_peer_allowed(address, networks, allowed):
    import ipaddress

    from asinfer.engine.node import peer_allowed

    assert peer_allowed(address, [ipaddress.ip_network(n) for n in networks]) is allowed


@pytest.mark.parametrize("changes, message", [
    ({"allow_peer": ["10.0.0.0/33"]}, "is not an address or a network"),
    ({"tls_cert": "node.crt"}, "tls-cert and tls-key go together"),
    ({"tls_cert": "missing.crt", "tls_key": "missing.key"}, "tls-cert 'missing.crt' is not a file"),
    ({"expected_from_header": 1}, "must be true or false"),
    ({"retention_period": -1.0}, "retention-period -1.0 must be 0"),
    ({"destination_tls_cert": "c.crt", "destination_tls_key": "c.key"}, "needs destination-tls-ca"),
])
def test_bad_operations_settings_are_named(changes, message):
    from asinfer.engine.node import load_config

    with pytest.raises(ValueError, match=message):
        load_config(None, **changes)


def test_serve_flags_for_operations_reach_the_config(tmp_path, pki):
    import tomllib

    from typer.testing import CliRunner

    from asinfer.engine.cli import app

    result = CliRunner().invoke(app, ["serve", "--print-config", "--metrics-port", "9090", "--allow-peer", "10.0.0.0/8",
                                      "--allow-peer", "fd00::/8", "--expected-instances", "24", "--retention-period",
                                      "60", "--tls-cert", str(pki["server_crt"]), "--tls-key", str(pki["server_key"]),
                                      "--tls-ca", str(pki["ca_crt"])])
    assert result.exit_code == 0, result.output
    printed = tomllib.loads(result.stdout)
    assert (printed["metrics-port"], printed["allow-peer"], printed["expected-instances"], printed["retention-period"],
            printed["tls-ca"]) == (9090, ["10.0.0.0/8", "fd00::/8"], 24, 60.0, str(pki["ca_crt"]))
