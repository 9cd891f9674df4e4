"""Certificate expiry: the broker's CA and certificate files the server is configured with, read ahead of time."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

#: A certificate expiring within this is warned about (/healthz, an alert):
#: time to renew it by the procedure in docs/deploy.md.
WARN_BEFORE = timedelta(days=30)
#: Files are read again at most this often (renewed ones are noticed within it).
RECHECK = timedelta(hours=1)


def expiry_warnings(files: Mapping[str, Path], now: datetime,
                    within: timedelta = WARN_BEFORE) -> list[str]:
    """One line per certificate in *files* (config key -> PEM file) that has
    expired or expires within *within* of *now*, or that cannot be read."""
    from cryptography import x509

    warnings = []
    for key, path in files.items():
        try:
            certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except OSError as exc:
            warnings.append(f"{key} {path}: cannot read it ({exc.strerror})")
            continue
        except ValueError:
            warnings.append(f"{key} {path}: no PEM certificate in it")
            continue
        for certificate in certificates:
            ends = certificate.not_valid_after_utc
            if ends - now > within:
                continue
            subject = certificate.subject.rfc4514_string() or "(no subject)"
            if ends <= now:
                warnings.append(f"{key} {path}: certificate {subject} expired on {ends:%Y-%m-%d}")
            else:
                days = (ends - now).days
                warnings.append(f"{key} {path}: certificate {subject} expires on {ends:%Y-%m-%d} "
                                f"(in {days} day{'' if days == 1 else 's'}): renew it")
    return warnings


def configured_files(config: Any) -> dict[str, Path]:
    """The certificate files of *config* to watch: ca_file, certfile, broker_cert_file."""
    names = ("ca_file", "certfile", "broker_cert_file")
    return {name: getattr(config, name) for name in names if getattr(config, name, None) is not None}


class CertificateCheck:
    """expiry_warnings for a config's files, read again at most every RECHECK."""

    def __init__(self, config: Any, within: timedelta = WARN_BEFORE):
        self.files = configured_files(config)
        self.within = within
        self._lock = threading.Lock()
        self._checked: tuple[datetime, list[str]] | None = None

    def warnings(self, now: datetime) -> list[str]:
        if not self.files:
            return []
        with self._lock:
            if self._checked is None or not timedelta(0) <= now - self._checked[0] < RECHECK:
                found = expiry_warnings(self.files, now, self.within)
                for warning in found:
                    log.warning("%s", warning)
                self._checked = (now, found)
            return list(self._checked[1])
