"""Request body caps and bounded password hashing, measured on a real uvicorn process: memory stays bounded."""

import re
import socket
import subprocess
import sys
import textwrap
import threading

import pytest
import requests

from server.process import stop_process
from tests.broker import free_port, wait_for_port

SERVER = textwrap.dedent("""
    import sys
    import uvicorn
    from server.api import create_app
    from server.auth import hash_password
    from server.config import HttpConfig, ServerConfig, UserConfig
    from server.store import SQLiteStore

    db, port, slots, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    proxy, ip_lockout = sys.argv[5], int(sys.argv[6])
    SQLiteStore.open(db).close()
    config = ServerConfig(api_token="a-long-random-api-token-0123456789", users={
        "kim": UserConfig(hash_password("the-right-password"), None)},
        http=HttpConfig(max_concurrent_hashes=slots, hash_wait_s=wait, login_free_failures=1000,
                        login_ip_free_failures=1000, login_ip_lockout_failures=ip_lockout, login_user_lockout_failures=1000))
    app = create_app(lambda: SQLiteStore.open(db), config)
    # As `onetap-server run` does: X-Forwarded-For believed only from the proxy.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=True,
                forwarded_allow_ips=proxy)
""")


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as handle:
        return int(re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.M)[1])


@pytest.fixture
def start(tmp_path):
    processes = []

    def start(slots=2, wait=30.0, proxy="10.9.9.9", ip_lockout=1000):
        script = tmp_path / "serve.py"
        script.write_text(SERVER)
        port = free_port()
        process = subprocess.Popen([sys.executable, str(script), str(tmp_path / f"{port}.db"), str(port),
                                    str(slots), str(wait), proxy, str(ip_lockout)],
                                   stderr=subprocess.DEVNULL)
        processes.append(process)
        wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        wrong_login(base, "warm-up")  # one hash done: the baseline holds one hash's memory
        return process, base, port

    yield start
    for process in processes:
        stop_process(process, timeout=10)


def wrong_login(base, name, password="wrong", headers=None):
    with requests.Session() as session:
        page = session.get(f"{base}/login", timeout=30)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
        return session.post(f"{base}/login", data={"csrf": csrf, "username": name, "password": password},
                            allow_redirects=False, timeout=120, headers=headers)


def send_huge(port, headers, chunks):
    """Send a request head, then the body until the server answers; return its status line."""
    import select

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(headers)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # an answer before the body is in: the server does not want the rest
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        select.select([sock], [], [], 30)
        return sock.recv(65536).split(b"\r\n", 1)[0]


MIB = 1024 * 1024


def test_a_200_mib_login_post_is_refused_without_being_read(start):
    process, base, port = start()
    before = status_kib(process.pid, "VmHWM")
    block = b"username=" + b"a" * (MIB - 9)
    head = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % (200 * MIB))
    assert send_huge(port, head, (block for _ in range(200))) == b"HTTP/1.1 413 Request Entity Too Large"
    # No length given (chunked): counted as it comes, refused past the cap.
    head = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % len(block) + block + b"\r\n"
    assert send_huge(port, head, (chunk for _ in range(200))) == b"HTTP/1.1 413 Request Entity Too Large"
    # A form just under the cap is still read (and refused for its CSRF token, not its size).
    assert requests.post(f"{base}/login", data={"username": "a" * 16000}, timeout=30).status_code == 403
    assert requests.post(f"{base}/login", data={"username": "a" * 17000}, timeout=30).status_code == 413
    assert requests.get(f"{base}/api/v1/summary", data=b"x" * 100, timeout=30).status_code == 413
    grown = (status_kib(process.pid, "VmHWM") - before) / 1024
    assert grown < 40, f"peak RSS grew {grown:.0f} MiB"


def parallel_wrong_logins(base, count):
    """*count* wrong logins at once, each as another name; their answers."""
    answers = []
    threads = [threading.Thread(target=lambda i=i: answers.append(wrong_login(base, f"guess-{i}")))
               for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return answers

def test_forty_parallel_wrong_logins_hash_two_at_a_time(start):
    process, base, _ = start(slots=2, wait=60.0)
    before = status_kib(process.pid, "VmHWM")
    answers = parallel_wrong_logins(base, 40)
    assert len(answers) == 40 and all(a.status_code == 303 for a in answers)  # all waited their turn
    grown = (status_kib(process.pid, "VmHWM") - before) / 1024
    # One argon2id hash holds 64 MiB; forty at once would take 2.5 GiB.
    assert grown < 120, f"peak RSS grew {grown:.0f} MiB"


def test_logins_beyond_the_wait_get_503_with_retry_after(start):
    _, base, _ = start(slots=1, wait=0.05)
    answers = parallel_wrong_logins(base, 12)
    busy = [a for a in answers if a.status_code == 503]
    assert busy and all(a.headers["Retry-After"] == "1" for a in busy)
    assert any(a.status_code == 303 for a in answers)


def test_behind_the_proxy_each_client_address_has_its_own_count(start):
    _, base, _ = start(proxy="127.0.0.1", ip_lockout=3)
    # The warm-up login counted against 127.0.0.1 itself, not against the clients below.
    guesser = {"X-Forwarded-For": "203.0.113.7"}
    for i in range(3):
        assert wrong_login(base, f"guess-{i}", headers=guesser).status_code == 303
    assert wrong_login(base, "kim", "the-right-password", headers=guesser).status_code == 429
    staff = {"X-Forwarded-For": "198.51.100.20"}
    assert wrong_login(base, "kim", "the-right-password", headers=staff).headers["location"] == "/"


def test_forwarded_for_from_an_untrusted_peer_is_not_believed(start):
    _, base, _ = start(proxy="10.9.9.9", ip_lockout=3)  # we are not the proxy
    for i in range(2):
        assert wrong_login(base, f"guess-{i}", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code == 303
    # Three failures from 127.0.0.1 (warm-up included), whatever the header said: locked.
    answer = wrong_login(base, "kim", "the-right-password", headers={"X-Forwarded-For": "198.51.100.20"})
    assert answer.status_code == 429
