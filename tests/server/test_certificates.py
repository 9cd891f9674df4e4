"""Certificate expiry: real PEM certificates read from disk, /healthz's warning and the alert it raises."""

from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from kiosk.protocol import Status
from server.alerts import AlertEngine
from server.api import create_app
from server.certificates import CertificateCheck, expiry_warnings
from server.config import ServerConfig, load_config
from server.store import SQLiteStore

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def certificate(path, name, expires):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(expires - timedelta(days=825)).not_valid_after(expires)
            .sign(key, hashes.SHA256()))
    with open(path, "ab") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_expiry_warnings_name_the_key_file_and_date(tmp_path):
    fresh = certificate(tmp_path / "ca.crt", "onetap CA", NOW + timedelta(days=400))
    soon = certificate(tmp_path / "broker.crt", "broker.example", NOW + timedelta(days=12, hours=1))
    gone = certificate(tmp_path / "old.crt", "old", NOW - timedelta(days=1))
    assert expiry_warnings({"ca_file": fresh}, NOW) == []
    assert expiry_warnings({"broker_cert_file": soon}, NOW) == [
        f"broker_cert_file {soon}: certificate CN=broker.example expires on 2026-12-12 (in 12 days): renew it"]
    assert expiry_warnings({"ca_file": gone}, NOW) == [
        f"ca_file {gone}: certificate CN=old expired on 2026-11-29"]
    # A bundle: the one expiring certificate in it is found.
    certificate(fresh, "second CA", NOW + timedelta(days=29))
    assert "CN=second CA expires" in expiry_warnings({"ca_file": fresh}, NOW)[0]
    missing = tmp_path / "none.crt"
    (tmp_path / "junk.crt").write_text("not a certificate")
    assert expiry_warnings({"ca_file": missing, "certfile": tmp_path / "junk.crt"}, NOW) == [
        f"ca_file {missing}: cannot read it (No such file or directory)",
        f"certfile {tmp_path / 'junk.crt'}: no PEM certificate in it"]


def test_broker_cert_file_is_a_config_key_with_its_environment_variable(tmp_path):
    soon = certificate(tmp_path / "broker.crt", "b", NOW + timedelta(days=3))
    config = load_config(None, env={"ONETAP_BROKER_CERT_FILE": str(soon)})
    assert config.broker_cert_file == soon
    assert len(CertificateCheck(config).warnings(NOW)) == 1


def test_healthz_carries_a_warning_but_stays_ok_and_the_check_rereads_renewed_files(tmp_path):
    ca = certificate(tmp_path / "ca.crt", "onetap CA", NOW + timedelta(days=20))
    config = ServerConfig(db=tmp_path / "s.db", broker="mqtts://127.0.0.1:8883", ca_file=ca)
    clock = [NOW]
    app = create_app(lambda: SQLiteStore.open(tmp_path / "s.db"), config, now=lambda: clock[0])
    client = TestClient(app)
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["warnings"] == [
        f"ca_file {ca}: certificate CN=onetap CA expires on 2026-12-20 (in 20 days): renew it"]
    ca.unlink()
    certificate(ca, "onetap CA", NOW + timedelta(days=800))  # renewed
    clock[0] = NOW + timedelta(hours=2)
    assert "warnings" not in client.get("/healthz").json()


def test_an_expiring_certificate_raises_an_alert_per_site_and_clears_when_renewed(tmp_path):
    broker_cert = certificate(tmp_path / "broker.crt", "broker", NOW + timedelta(days=10))
    store = SQLiteStore.open(tmp_path / "s.db")
    try:
        for site in ("gangnam", "seocho"):
            store.update_status(site, "c1", Status("online", {"clock_synced": True}), NOW)
        engine = AlertEngine(store, ServerConfig(broker_cert_file=broker_cert))
        raised = engine.run_once(NOW)["raised"]
        assert sorted((a["site"], a["kind"]) for a in raised) == [
            ("gangnam", "certificate"), ("seocho", "certificate")]
        assert "broker_cert_file" in raised[0]["message"] and "2026-12-10" in raised[0]["message"]
        assert engine.run_once(NOW + timedelta(minutes=1))["raised"] == []
        broker_cert.unlink()
        certificate(broker_cert, "broker", NOW + timedelta(days=800))
        cleared = engine.run_once(NOW + timedelta(hours=2))["cleared"]
        assert sorted(a["site"] for a in cleared) == ["gangnam", "seocho"]
    finally:
        store.close()
