"""Report subscriptions: which period's report is due, and the job that mails it with the PDF attached.

Each [reports.<name>] is mailed once per period (yesterday, last week, last
month) from mail.send_hour local time on. What happened is kept in the
store's meta table under ``report-mail:<name>:<first day>`` as JSON (status
sent or failed, attempts, recipients, error), so a restart neither sends a
report twice nor forgets one that failed; a failed one is tried again every
mail.interval_s, mail.retries more times.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Callable

from server.config import ReportScheduleConfig, ServerConfig
from server.errors import MailError, StoreError
from server.periodic import Periodic
from server.report import Report, last_complete, report_for
from server.store import Store

log = logging.getLogger(__name__)

#: [reports.*] every -> the report's period.
PERIOD = {"daily": "day", "weekly": "week", "monthly": "month"}
META_PREFIX = "report-mail"


@dataclass(frozen=True)
class Due:
    """One subscription's report for the period starting *first*, and its meta key."""

    name: str
    schedule: ReportScheduleConfig
    first: date

    @property
    def key(self) -> str:
        return f"{META_PREFIX}:{self.name}:{self.first.isoformat()}"


def due_reports(config: ServerConfig, local_now: datetime) -> list[Due]:
    """The reports whose period is over and whose send hour has come (pure)."""
    if config.mail is None or local_now.hour < config.mail.send_hour:
        return []
    return [Due(name, schedule, last_complete(local_now.date(), PERIOD[schedule.every]))
            for name, schedule in sorted(config.reports.items())]


def should_try(record: dict[str, Any] | None, retries: int) -> bool:
    """Not sent yet, and attempts left (1 + retries in all)."""
    return record is None or record.get("status") != "sent" and record.get("attempts", 0) <= retries


def mail_text(reports: list[Report], lang: str) -> tuple[str, str]:
    """Subject and body of a report mail (pure)."""
    from server.particles import attach

    head = reports[0]
    who = f"{head.institution} " if head.institution else ""
    names = ", ".join(r.site_name for r in reports)
    subject = f"[onetap] {who}{head.title} {head.month} · {names}"
    lines = []
    for r in reports:
        figures = {f.key: f.value for f in r.figures}
        if lang == "ko":
            lines.append(f"{r.site_name}: 평가 {figures['count']}건, 만족도 지수 {figures['index']}, "
                         f"CSAT {figures['csat']}, 평균 점수 {figures['mean']}")
        else:
            lines.append(f"{r.site_name}: {figures['count']} ratings, satisfaction index {figures['index']}, "
                         f"CSAT {figures['csat']}, mean score {figures['mean']}")
    if lang == "ko":
        intro = f"{attach(head.title, '을')} 보내 드립니다 ({head.month})."
        outro = "자세한 내용과 정의는 첨부한 PDF를 보십시오. 이 메일은 onetap 서버가 자동으로 보냈습니다."
    else:
        intro = f"Here is the {head.title.lower()} for {head.month}."
        outro = "The attached PDF has the details and definitions. This mail was sent by the onetap server."
    return subject, "\n".join([intro, "", *lines, "", outro, ""])


class ReportMailer(Periodic):
    """Mails every due subscription at start and every mail.interval_s."""

    name = "onetap-report-mail"

    def __init__(self, config: ServerConfig, store_factory: Callable[[], Store], *,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        if config.mail is None:
            raise ValueError("report mail needs [mail]")
        super().__init__(store_factory, config.mail.interval_s)
        self.config = config
        self.now = now
        self.sent = 0
        self.failed = 0

    def tick(self, store: Store) -> None:
        self.run_once(store)

    def run_once(self, store: Store) -> list[str]:
        """Send what is due now; returns the meta keys of the reports sent."""
        moment = self.now()
        sent = []
        for due in due_reports(self.config, moment.astimezone(self.config.tz)):
            record = json.loads(store.get_meta(due.key) or "null")
            if not should_try(record, self.config.mail.retries):
                continue
            attempts = (record or {}).get("attempts", 0) + 1
            try:
                size = self._deliver(store, due, moment)
            except MailError as exc:
                self.failed += 1
                log.warning("report mail %s (%s) attempt %d failed: %s", due.name, due.first, attempts, exc)
                self._record(store, due, moment, "failed", attempts, error=str(exc)[:500])
                continue
            except StoreError:
                raise  # the Periodic loop reopens the store and tries again
            except Exception as exc:  # a report that cannot be rendered must not stop the others
                self.failed += 1
                log.exception("report mail %s (%s): cannot build the report", due.name, due.first)
                self._record(store, due, moment, "failed", attempts, error=f"{type(exc).__name__}: {exc}"[:500])
                continue
            self.sent += 1
            sent.append(due.key)
            log.info("report mail %s (%s) sent to %s: %d bytes", due.name, due.first,
                     ", ".join(due.schedule.to), size)
            self._record(store, due, moment, "sent", attempts, size=size)
        return sent

    def _deliver(self, store: Store, due: Due, moment: datetime) -> int:
        from server import mail
        from server.document import render_pdf

        period = PERIOD[due.schedule.every]
        reports = [report_for(self.config, store, site, due.first, lang=due.schedule.lang, now=moment,
                              exclude_suspect=due.schedule.exclude_suspect, period=period)
                   for site in due.schedule.sites]
        attachments = [(f"onetap-report-{r.site}-{r.first.isoformat()}.pdf", render_pdf(r), "application/pdf")
                       for r in reports]
        subject, body = mail_text(reports, due.schedule.lang)
        message = mail.build_message(self.config.mail.sender, due.schedule.to, subject, body, attachments)
        mail.send(self.config.mail, message)
        return len(message.as_bytes())

    def _record(self, store: Store, due: Due, moment: datetime, status: str, attempts: int, **extra: Any) -> None:
        record = {"status": status, "attempts": attempts, "at": moment.isoformat(timespec="seconds"),
                  "every": due.schedule.every, "first": due.first.isoformat(), "to": list(due.schedule.to),
                  "sites": list(due.schedule.sites), **extra}
        store.set_meta(due.key, json.dumps(record, ensure_ascii=False))
