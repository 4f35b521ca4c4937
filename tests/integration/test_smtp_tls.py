"""E-mail over TLS against a real SMTP server (aiosmtpd, in a thread) with a self-signed
certificate made by openssl: STARTTLS and implicit TLS deliver, with a login, when
SMTP_CA_FILE trusts the certificate; an untrusted certificate, or a server that offers no
STARTTLS, fails the attempt (DeliveryFailed) before anything is sent, never in clear."""

import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from finq_core.config import Settings
from finq_core.notifications import DeliveryFailed, send_email
from tests.helpers import free_port
from tests.mailserver import SMTP_PASSWORD, SMTP_USER, Mailbox, smtp_server

pytestmark = [
    pytest.mark.integration,
    # aiosmtpd warns of AUTH without STARTTLS: the `ssl` server is TLS throughout,
    # and the `none` server is the plain case under test.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]

Mode = Literal["none", "starttls", "ssl"]


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


def make_cert(folder: Path) -> Cert:
    """A self-signed certificate for localhost and 127.0.0.1 (its own CA)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert = Cert(folder / "cert.pem", folder / "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(cert.key),
            "-out",
            str(cert.cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return make_cert(tmp_path_factory.mktemp("smtp-cert"))


@pytest.fixture(scope="module")
def other_cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """Another self-signed certificate: trusting it must not make `cert` trusted."""
    return make_cert(tmp_path_factory.mktemp("smtp-other-cert"))


@contextmanager
def server(mode: Mode, cert: Cert) -> Iterator[Mailbox]:
    """An SMTP server that demands a login: `starttls` refuses every command but EHLO and
    STARTTLS before the upgrade, `ssl` speaks TLS from the first byte, `none` offers no TLS."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    if mode == "starttls":
        options: dict[str, Any] = {
            "tls_context": context,
            "require_starttls": True,
            "auth_require_tls": True,
        }
    elif mode == "ssl":
        # The whole connection is TLS; aiosmtpd's own "TLS before AUTH" rule knows only
        # STARTTLS, so it is switched off here (the mailbox records the encryption).
        options = {"ssl_context": context, "auth_require_tls": False}
    else:
        options = {"auth_require_tls": False}
    with smtp_server(auth_required=True, **options) as box:
        yield box


def settings(port: int, tls: Mode, ca_file: Path | None) -> Settings:
    return Settings(
        smtp_host="localhost",
        smtp_port=port,
        smtp_tls=tls,
        smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_from="finq@test.example",
        smtp_ca_file=str(ca_file) if ca_file else None,
        notify_timeout_seconds=10,
    )


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_tls_delivers_with_credentials_when_the_ca_file_trusts_the_server(
    mode: Mode,
    cert: Cert,
) -> None:
    with server(mode, cert) as box:
        send_email(
            settings(box.port, mode, cert.cert),
            "ops@example.com",
            f"finq: over {mode}",
            "the task's JSON",
        )
    (mail,) = box.messages
    assert mail.rcpts == ["ops@example.com"] and mail.mail_from == "finq@test.example"
    assert mail.message["Subject"] == f"finq: over {mode}"
    assert mail.message.get_content().strip() == "the task's JSON"
    assert mail.login == SMTP_USER  # the server demands a login: the message proves it
    assert mail.encrypted


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
@pytest.mark.parametrize("trust", ["system CAs", "another CA file"])
def test_an_untrusted_certificate_fails_before_anything_is_sent(
    mode: Mode,
    trust: str,
    cert: Cert,
    other_cert: Cert,
) -> None:
    ca_file = other_cert.cert if trust == "another CA file" else None
    with server(mode, cert) as box, pytest.raises(DeliveryFailed) as failed:
        send_email(settings(box.port, mode, ca_file), "ops@example.com", "s", "t")
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value)
    assert box.messages == []


def test_starttls_against_a_server_without_it_never_falls_back_to_plain_text(
    cert: Cert,
) -> None:
    with server("none", cert) as box, pytest.raises(DeliveryFailed) as failed:
        send_email(settings(box.port, "starttls", cert.cert), "ops@example.com", "s", "t")
    assert "STARTTLS" in str(failed.value)
    assert box.messages == []


def test_ssl_against_a_plain_server_fails(cert: Cert) -> None:
    with server("none", cert) as box, pytest.raises(DeliveryFailed):
        send_email(settings(box.port, "ssl", cert.cert), "ops@example.com", "s", "t")
    assert box.messages == []


def test_plain_mode_still_delivers(cert: Cert) -> None:
    with server("none", cert) as box:
        send_email(settings(box.port, "none", None), "ops@example.com", "plain", "t")
    (mail,) = box.messages
    assert mail.login == SMTP_USER and not mail.encrypted


def test_an_unreadable_ca_file_is_a_permanent_failure(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(DeliveryFailed) as failed:
        send_email(settings(free_port(), "starttls", missing), "ops@example.com", "s", "t")
    assert "SMTP_CA_FILE" in str(failed.value) and not failed.value.retryable
