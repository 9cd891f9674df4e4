"""Scheduled report mail through a real SMTP server (aiosmtpd, STARTTLS, login): due periods, the PDF
attached with the right figures, retries, and a log that keeps a report from going twice."""

import json
import ssl
import subprocess
import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from kiosk.protocol import Rating
from server.broker import free_port
from server.config import MailConfig, ReportScheduleConfig, ServerConfig, SiteConfig
from server.report import last_complete
from server.store import SQLiteStore
from server.subscription import ReportMailer, due_reports, should_try
from tests.waiting import wait_for

KST = timezone(timedelta(hours=9))
NOW = datetime(2026, 12, 1, 8, 30, tzinfo=KST)  # the first morning after November


class Inbox:
    """An aiosmtpd handler that keeps what arrives and refuses the next *refuse* messages."""

    def __init__(self):
        self.messages = []
        self.refuse = 0

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            self.refuse -= 1
            return "451 4.3.0 Try again later"
        self.messages.append(envelope)
        return "250 OK"


def check_login(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"reports" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.fixture
def smtp(pki):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert, pki.key)
    inbox = Inbox()
    controller = Controller(inbox, hostname="localhost", port=free_port(), tls_context=context,
                            require_starttls=True, authenticator=check_login, auth_require_tls=True)
    controller.start()
    yield inbox, controller.port
    controller.stop()


def seed(store):
    """November 2026 at gangnam-office: scores 5, 4, 4, 2 ten times (40; index 68.75); October: ten 3s."""
    batch, seq = [], 0
    for day in range(1, 11):
        for score in (5, 4, 4, 2):
            seq += 1
            batch.append(Rating(id=str(uuid.uuid4()), seq=seq, score=score, clock_synced=True,
                                at=datetime(2026, 11, day, 10, seq % 50, tzinfo=KST).isoformat(),
                                reason="resolution" if score == 2 else None))
    for day in range(1, 11):
        seq += 1
        batch.append(Rating(id=str(uuid.uuid4()), seq=seq, score=3, clock_synced=True,
                            at=datetime(2026, 10, day, 10, 0, tzinfo=KST).isoformat()))
    store.ingest_batch("gangnam-office", "counter-01", batch, NOW)


def config(pki, port, **mail):
    settings = dict(host="localhost", port=port, sender="onetap@example.go.kr", user="reports",
                    password="s3cret", ca_file=pki.ca, retries=2, interval_s=1, send_hour=7)
    settings.update(mail)
    return ServerConfig(
        institution="강남구청", sites={"gangnam-office": SiteConfig(name="강남구청 민원실")},
        mail=MailConfig(**settings),
        reports={"monthly": ReportScheduleConfig(to=("head@example.go.kr", "staff@example.go.kr"),
                                                 every="monthly", sites=("gangnam-office",))})


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore.open(tmp_path / "onetap.db")
    seed(store)
    yield store
    store.close()


def pdf_text(data, tmp_path):
    path = tmp_path / "attached.pdf"
    path.write_bytes(data)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def test_last_complete_periods():
    monday = date(2026, 11, 30)
    assert last_complete(monday, "day") == date(2026, 11, 29)
    assert last_complete(monday, "week") == date(2026, 11, 23)
    assert last_complete(date(2026, 12, 6), "week") == date(2026, 11, 23)  # Sunday: the week is not over
    assert last_complete(date(2026, 12, 1), "month") == date(2026, 11, 1)


def test_due_from_the_send_hour_on(pki):
    cfg = config(pki, 25)
    assert due_reports(cfg, NOW.replace(hour=6)) == []
    [due] = due_reports(cfg, NOW)
    assert due.first == date(2026, 11, 1) and due.key == "report-mail:monthly:2026-11-01"
    assert should_try(None, 2) and should_try({"status": "failed", "attempts": 2}, 2)
    assert not should_try({"status": "failed", "attempts": 3}, 2)
    assert not should_try({"status": "sent", "attempts": 1}, 2)


def test_the_report_arrives_with_its_pdf_once_after_a_retry(pki, smtp, store, tmp_path):
    inbox, port = smtp
    inbox.refuse = 1
    mailer = ReportMailer(config(pki, port), lambda: store, now=lambda: NOW)
    assert mailer.run_once(store) == []  # 451: kept for another try
    record = json.loads(store.get_meta("report-mail:monthly:2026-11-01"))
    assert record["status"] == "failed" and record["attempts"] == 1 and "451" in record["error"]

    assert mailer.run_once(store) == ["report-mail:monthly:2026-11-01"]
    [envelope] = inbox.messages
    assert sorted(envelope.rcpt_tos) == ["head@example.go.kr", "staff@example.go.kr"]
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == "[onetap] 강남구청 월간 만족도 보고서 2026년 11월 · 강남구청 민원실"
    body = message.get_body(("plain",)).get_content()
    assert "월간 만족도 보고서를 보내 드립니다" in body and "평가 40건, 만족도 지수 68.8" in body
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "onetap-report-gangnam-office-2026-11-01.pdf"
    text = pdf_text(attachment.get_content(), tmp_path)
    assert "강남구청 민원실" in text and "2026년 11월" in text and "업무 처리 결과" in text
    assert "68.8" in text and "75.0%" in text and "3.75" in text and "50.0" in text  # October: index 50
    record = json.loads(store.get_meta("report-mail:monthly:2026-11-01"))
    assert record["status"] == "sent" and record["attempts"] == 2 and record["to"] == ["head@example.go.kr",
                                                                                       "staff@example.go.kr"]

    assert mailer.run_once(store) == [] and len(inbox.messages) == 1  # never twice
    # A restarted server reads the same log.
    assert ReportMailer(config(pki, port), lambda: store, now=lambda: NOW).run_once(store) == []


def test_retries_stop_after_the_configured_number(pki, smtp, store):
    inbox, port = smtp
    inbox.refuse = 10
    mailer = ReportMailer(config(pki, port, retries=2), lambda: store, now=lambda: NOW)
    for _ in range(5):
        mailer.run_once(store)
    record = json.loads(store.get_meta("report-mail:monthly:2026-11-01"))
    assert record["status"] == "failed" and record["attempts"] == 3 and inbox.refuse == 7


def test_a_wrong_password_or_an_untrusted_server_is_a_logged_failure(pki, smtp, store):
    inbox, port = smtp
    ReportMailer(config(pki, port, password="wrong"), lambda: store, now=lambda: NOW).run_once(store)
    record = json.loads(store.get_meta("report-mail:monthly:2026-11-01"))
    assert record["status"] == "failed" and "535" in record["error"]
    ReportMailer(config(pki, port, ca_file=pki.wrong_ca), lambda: store, now=lambda: NOW).run_once(store)
    record = json.loads(store.get_meta("report-mail:monthly:2026-11-01"))
    assert record["attempts"] == 2 and "CERTIFICATE_VERIFY_FAILED" in record["error"]
    assert inbox.messages == []


def test_the_job_runs_in_its_own_thread_with_its_own_store(pki, smtp, tmp_path):
    inbox, port = smtp
    path = tmp_path / "thread.db"
    seeded = SQLiteStore.open(path)
    seed(seeded)
    seeded.close()
    cfg = config(pki, port)
    cfg = replace(cfg, reports={"weekly": ReportScheduleConfig(to=("head@example.go.kr",), every="weekly",
                                                               sites=("gangnam-office",), lang="en")})
    monday = datetime(2026, 11, 16, 9, 0, tzinfo=KST)  # the week of 9-15 November is over
    mailer = ReportMailer(cfg, lambda: SQLiteStore.open(path), now=lambda: monday).start()
    try:
        wait_for(lambda: inbox.messages, "the weekly report mail")
    finally:
        mailer.stop()
    message = message_from_bytes(inbox.messages[0].content, policy=policy.default)
    assert message["Subject"].startswith("[onetap] 강남구청 Weekly satisfaction report 2026-11-09 – 2026-11-15")
    assert "8 ratings" in message.get_body(("plain",)).get_content()  # the 9th and 10th, four a day
