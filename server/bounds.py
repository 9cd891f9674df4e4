"""The bounds every HTTP request is held to: the dates it may name and the body it may carry."""

from datetime import date
from typing import Any, Callable

#: Dates outside these are refused with 400 (a year 1 or 9999 breaks date arithmetic).
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2100, 12, 31)


class BodyTooLarge(Exception):
    """More body bytes arrived than the route accepts (BodyLimit answers 413)."""


class BodyLimit:
    """ASGI middleware: a request body larger than its route needs is refused with
    413 before it is read whole. POST (the dashboard's forms, login included) may
    carry *form_bytes*; nothing else needs a body. Content-Length is checked first,
    then the bytes actually received (a chunked body has no length)."""

    def __init__(self, app: Any, form_bytes: int):
        self.app = app
        self.form_bytes = form_bytes

    def limit(self, method: str) -> int:
        return self.form_bytes if method in ("POST", "PUT", "PATCH") else 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["method"])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._refuse(send, limit)
            return
        received = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send, limit)

    @staticmethod
    async def _refuse(send: Callable, limit: int) -> None:
        body = f'{{"detail":"the request body is larger than this route accepts ({limit} bytes)"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
