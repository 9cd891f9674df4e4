"""Outbound HTTP: requests sessions that retry with a bounded back-off of onetap's own."""

from __future__ import annotations

from typing import Any, Iterable

#: Answers worth trying again: the other side is busy or briefly broken.
RETRY_STATUSES = (429, 500, 502, 503, 504)


def retrying_session(*, retries: int, methods: Iterable[str], user_agent: str,
                     verify: bool | str = True, backoff_factor: float = 0.5) -> Any:
    """A requests.Session retrying *methods* on connection errors, 429 and 5xx, verifying TLS.

    The other side's Retry-After is not obeyed (a hostile one could stall us
    for days): the back-off is our own, at most 10 s between tries. Redirects
    are not followed by the retry logic. After the last try the last answer is
    returned (not raised), so the caller can say which status it was.
    """
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, redirect=0,
                  backoff_factor=backoff_factor, backoff_max=10, respect_retry_after_header=False,
                  status_forcelist=RETRY_STATUSES, allowed_methods=frozenset(methods),
                  raise_on_status=False, raise_on_redirect=False)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = verify
    session.headers["User-Agent"] = user_agent
    return session
