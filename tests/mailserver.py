"""A real SMTP server for the tests (aiosmtpd, serving from a thread on 127.0.0.1) that
checks logins and records every message it accepts, with the login used and whether the
connection was encrypted."""

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from tests.helpers import free_port

SMTP_USER = "finq-mailer"
SMTP_PASSWORD = "mail-secret-123"


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpts: list[str]
    message: EmailMessage
    login: str | None
    encrypted: bool  # STARTTLS or TLS from the first byte


@dataclass
class Mailbox:
    port: int
    messages: list[Mail] = field(default_factory=list)

    def to(self, address: str) -> list[EmailMessage]:
        return [m.message for m in self.messages if address in m.rcpts]


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        login = (
            session.auth_data.decode()
            if isinstance(session.auth_data, bytes)
            else (session.auth_data)
        )
        encrypted = server.transport.get_extra_info("ssl_object") is not None
        self.box.messages.append(
            Mail(envelope.mail_from, list(envelope.rcpt_tos), msg, login, encrypted)
        )
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
        SMTP_USER,
        SMTP_PASSWORD,
    )
    return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)


@contextmanager
def smtp_server(**options: Any) -> Iterator[Mailbox]:
    """A running server; `options` go to aiosmtpd's Controller and SMTP (e.g. `tls_context`
    with `require_starttls`, `ssl_context`, `auth_required`, `auth_require_tls`)."""
    from aiosmtpd.controller import Controller

    box = Mailbox(port=free_port())
    controller = Controller(
        _Handler(box), hostname="127.0.0.1", port=box.port, authenticator=_authenticate, **options
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
