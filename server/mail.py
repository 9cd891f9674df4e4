"""Mail through the institution's SMTP server: a message with attachments, sent over STARTTLS (smtplib)."""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Sequence

from server.config import MailConfig
from server.errors import MailError

log = logging.getLogger(__name__)


def build_message(sender: str, to: Sequence[str], subject: str, body: str,
                  attachments: Sequence[tuple[str, bytes, str]] = ()) -> EmailMessage:
    """A UTF-8 message; *attachments* are (file name, content, MIME type)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    message.set_content(body)
    for name, content, mime in attachments:
        maintype, _, subtype = mime.partition("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return message


def send(config: MailConfig, message: EmailMessage) -> None:
    """Deliver *message* through the configured server; MailError says why not."""
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
            if config.starttls:
                context = ssl.create_default_context(
                    cafile=str(config.ca_file) if config.ca_file else None)
                smtp.starttls(context=context)
            if config.user:
                if not config.password:
                    raise MailError(f"mail.user {config.user!r} is set but ONETAP_MAIL_PASSWORD is not")
                smtp.login(config.user, config.password)
            refused = smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        if isinstance(exc, MailError):
            raise
        raise MailError(f"SMTP {config.host}:{config.port}: {exc}") from None
    if refused:
        # Some recipients were accepted: the message went; say who did not get it.
        log.warning("SMTP %s refused recipients: %s", config.host, ", ".join(refused))
