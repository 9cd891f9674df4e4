"""Behind the reverse proxy: Secure cookies when the proxy says HTTPS, and only the proxy is believed."""

from __future__ import annotations

import pytest
import requests

from server.dashboard.routes import LOGIN_CSRF_COOKIE
from tests.server_process import ServerProcess


@pytest.mark.parametrize("allowed, secure", [("127.0.0.1", True), ("10.1.2.3", False)],
                         ids=["from-the-proxy", "from-anyone-else"])
def test_cookies_are_secure_only_when_the_trusted_proxy_says_https(tmp_path, mosquitto, allowed, secure):
    server = ServerProcess(mosquitto, tmp_path, env={"ONETAP_FORWARDED_ALLOW_IPS": allowed}).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        # What Caddy sends (deploy/caddy/Caddyfile), here from 127.0.0.1.
        proxied = requests.get(f"{base}/login", headers={"X-Forwarded-Proto": "https"}, timeout=30)
        plain = requests.get(f"{base}/login", timeout=30)
    finally:
        server.stop()
    assert proxied.status_code == plain.status_code == 200
    cookie = proxied.headers["set-cookie"]
    assert cookie.startswith(f"{LOGIN_CSRF_COOKIE}=")
    assert ("; secure" in cookie.lower()) is secure
    # Plain HTTP (the demo, a test on the host itself) keeps working cookies.
    assert "; secure" not in plain.headers["set-cookie"].lower()
