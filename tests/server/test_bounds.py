"""BodyLimit refuses a body larger than its route accepts, declared or streamed, before the app reads it whole."""

import asyncio

from server.bounds import BodyLimit


def run(method, headers, chunks, form_bytes=16):
    """One request through BodyLimit around an app that reads the whole body; what was sent back and read."""
    read = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            read.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = []
    queue = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
             for i, chunk in enumerate(chunks)]

    async def receive():
        return queue.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "headers": headers}
    asyncio.run(BodyLimit(app, form_bytes=form_bytes)(scope, receive, send))
    return sent[0]["status"], b"".join(read)


def test_a_form_within_the_limit_passes_whole():
    assert run("POST", [(b"content-length", b"10")], [b"0123456789"]) == (200, b"0123456789")


def test_a_declared_length_over_the_limit_is_refused_unread():
    assert run("POST", [(b"content-length", b"200000000")], [b"x" * 16]) == (413, b"")
    assert run("POST", [(b"content-length", b"-1")], [b""])[0] == 413


def test_a_chunked_body_is_counted_as_it_arrives():
    status, read = run("POST", [], [b"x" * 10, b"x" * 10, b"x" * 10])
    assert status == 413 and len(read) <= 16


def test_a_get_may_carry_no_body():
    assert run("GET", [(b"content-length", b"1")], [b"x"])[0] == 413
    assert run("GET", [], [b""]) == (200, b"")

