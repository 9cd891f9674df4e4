"""The service factory: one config wires the link, the periodic jobs and the HTTP app, and stops them."""

import threading
import time

from fastapi.testclient import TestClient

from server.config import ServerConfig
from server.service import STOP_BUDGET_S, create_service
from tests.waiting import wait_for

TOKEN = "t0k3n-abcdefghijklmnopqrstuvwxyz"


def test_a_full_service_runs_every_job_under_the_supervisor_and_stops_them(mosquitto, tmp_path):
    config = ServerConfig(broker=mosquitto.url, db=tmp_path / "s.db", api_token=TOKEN,
                          retention_days=30)
    service = create_service(config)
    assert (tmp_path / "s.db").exists()  # created (migrated) before anything reads it
    service.start()
    try:
        client = TestClient(service.app)
        health = wait_for(lambda: (r := client.get("/healthz")).status_code == 200
                          and r.json()["broker"] == "connected" and r.json(), "a healthy service")
        assert {"onetap-alerts", "onetap-retention", "onetap-survey"} <= set(health["threads"])
        assert client.get("/api/v1/summary").status_code == 401
        assert client.get("/api/v1/summary", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        started = time.monotonic()
        service.stop()
    assert time.monotonic() - started < STOP_BUDGET_S + 1
    assert not any(t.name.startswith("onetap-") and t.is_alive() for t in threading.enumerate()
                   if t.name in ("onetap-alerts", "onetap-retention", "onetap-survey"))
    assert not service.link.connected


def test_an_ingest_worker_has_no_http_app_and_no_periodic_jobs(mosquitto, tmp_path):
    config = ServerConfig(broker=mosquitto.url, db=tmp_path / "s.db", role="ingest")
    service = create_service(config).start()
    try:
        assert service.app is None and service.runners == []
        wait_for(lambda: service.link.connected, "the ingest link connected")
    finally:
        service.stop()


def test_stop_before_start_is_harmless(tmp_path):
    service = create_service(ServerConfig(db=tmp_path / "s.db", api_token=TOKEN))
    service.stop()
    assert service.runners == [] and not service.started


def test_no_swagger_ui_or_redoc_only_the_openapi_contract(tmp_path):
    service = create_service(ServerConfig(db=tmp_path / "s.db", api_token=TOKEN))
    client = TestClient(service.app)
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = client.get(path)
        assert response.status_code == 404 and "swagger" not in response.text.lower(), path
    contract = client.get("/openapi.json")
    assert contract.status_code == 200 and "/api/v1/summary" in contract.json()["paths"]
