"""Retrying sessions: 429 and 5xx tried again with our own back-off, other refusals at once."""

import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from server.outbound import retrying_session


@pytest.fixture
def answers():
    """A local endpoint answering the listed statuses in turn (then 200); records each method."""
    state = {"statuses": [], "methods": []}

    class Handler(BaseHTTPRequestHandler):
        def answer(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state["methods"].append(self.command)
            status = state["statuses"].pop(0) if state["statuses"] else 200
            self.send_response(status)
            self.send_header("Retry-After", "86400")  # a day: must not be obeyed
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


def test_busy_and_broken_answers_are_retried_without_obeying_retry_after(answers):
    answers["statuses"] = [429, 503]
    session = retrying_session(retries=3, methods=("POST",), user_agent="t", backoff_factor=0.01)
    started = time.monotonic()
    assert session.post(answers["url"], json={"a": 1}, timeout=5).status_code == 200
    assert answers["methods"] == ["POST"] * 3
    assert time.monotonic() - started < 30


def test_a_refusal_is_not_retried_and_the_last_answer_is_returned(answers):
    answers["statuses"] = [404]
    session = retrying_session(retries=3, methods=("POST",), user_agent="t", backoff_factor=0.01)
    assert session.post(answers["url"], json={}, timeout=5).status_code == 404
    assert answers["methods"] == ["POST"]
    answers["statuses"], answers["methods"] = [503] * 5, []
    assert session.post(answers["url"], json={}, timeout=5).status_code == 503  # retries spent
    assert answers["methods"] == ["POST"] * 4  # the first try and three more
