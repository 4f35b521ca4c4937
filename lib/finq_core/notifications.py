"""Notifications of a task's final status: webhook targets (SSRF rules), signing, sending.

Shared by the API, which refuses a bad target at submission (422), and the worker's
deliveries (finq_worker.deliveries), which check the target again right before every attempt:
a name that resolved to a public address at submission may resolve to 127.0.0.1 later (DNS
rebinding).
So the sender resolves the name once per attempt, checks every address it got, and connects
to one of exactly those checked addresses (TLS still verifies the certificate against the
host name). Redirects are not followed: a 3xx is a failed attempt, never a new target.

Rules for a webhook URL:
- scheme http or https, a host name, no user:password part, at most 2048 characters;
- every address the host resolves to must be global unicast: loopback, private, shared
  (100.64/10), link-local (incl. 169.254.169.254, the cloud metadata address), multicast,
  reserved, unspecified and documentation ranges are refused, and so are IPv6 forms that
  embed such an IPv4 address (mapped, 6to4, Teredo); unless WEBHOOK_ALLOW_PRIVATE=true
  (a development setting: receivers on this machine or a private network).

Signature: `X-Finq-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact request body with
WEBHOOK_SECRET as the key. `X-Finq-Delivery` is the same on every attempt of one delivery,
so a receiver can drop duplicates (delivery is at least once).
"""

import hashlib
import hmac
import http.client
import ipaddress
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from finq_core.config import Settings

MAX_URL_LENGTH = 2048
MAX_EMAIL_LENGTH = 254
# Deliberately plain: one @, no spaces or control characters (no header injection), a dot in
# the domain. Full RFC 5322 is not the point; the SMTP server has the last word.
EMAIL_PATTERN = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
RESPONSE_READ_LIMIT = 64 * 1024
USER_AGENT = "finq-webhook/1"
# A task's notification targets (its `notify`) by channel: the field naming each receiver.
TARGET_FIELDS = {"webhook": "webhook_url", "email": "email"}


class TargetRefused(ValueError):  # noqa: N818 - reads as an outcome
    """The target may not be contacted; the message says why. Never retried."""


class DeliveryFailed(Exception):  # noqa: N818 - reads as an outcome
    """An attempt failed; `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, retryable: bool, http_status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.http_status = http_status


@dataclass(frozen=True)
class WebhookTarget:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent on the request line
    addresses: tuple[str, ...]  # every resolved address, all checked


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def address_allowed(address: str) -> bool:
    """True for a global unicast address (and, for IPv6, no embedded non-global IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None and not address_allowed(str(inner)):
            return False
    return True


def _name_refused(host: str) -> TargetRefused:
    """One refusal for a host name that does not resolve or resolves to a non-public address:
    naming the address, or telling the two apart, would let anyone map the internal DNS."""
    return TargetRefused(
        f"host {host!r} does not resolve to public addresses only (it does not resolve, or "
        "to a loopback, private, link-local, multicast or reserved address); webhooks must "
        "reach a public address"
    )


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(host: str, port: int) -> tuple[str, ...]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _name_refused(host) from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise _name_refused(host)
    return addresses


def check_webhook_url(url: str, allow_private: bool) -> WebhookTarget:
    """Parse, resolve and check a webhook URL; raise TargetRefused with the reason."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise TargetRefused("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetRefused("scheme must be http or https")
    if not parts.hostname:
        raise TargetRefused("has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not contain a user name or password")
    port = port or (443 if scheme == "https" else 80)
    host = parts.hostname
    addresses = resolve(host, port)
    refused = [a for a in addresses if not allow_private and not address_allowed(a)]
    if refused and not _is_address(host):
        raise _name_refused(host)
    if refused:  # an address given as such: naming it reveals nothing the caller did not type
        raise TargetRefused(
            f"host {host!r} resolves to {refused[0]}, a loopback, private, link-local, "
            "multicast or reserved address; webhooks must reach a public address"
        )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return WebhookTarget(scheme, host, port, path, addresses)


def check_email(address: str) -> str:
    address = address.strip()
    if len(address) > MAX_EMAIL_LENGTH or not EMAIL_PATTERN.match(address):
        raise TargetRefused("not a valid e-mail address")
    return address


def sign(body: bytes, secret: str) -> str:
    """The X-Finq-Signature value: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to one checked address; the Host header still names the host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Like _PinnedHTTPConnection, with TLS verified against the host name (SNI too)."""

    def __init__(
        self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def post_webhook(
    target: WebhookTarget, body: bytes, headers: dict[str, str], timeout: float
) -> int:
    """POST `body` to the target's checked addresses (the next one on a connection error);
    return the HTTP status of a 2xx answer or raise DeliveryFailed."""
    last: Exception | None = None
    for address in target.addresses:
        conn: http.client.HTTPConnection
        if target.scheme == "https":
            conn = _PinnedHTTPSConnection(
                target.host, target.port, address, timeout, ssl.create_default_context()
            )
        else:
            conn = _PinnedHTTPConnection(target.host, target.port, address, timeout)
        try:
            conn.request(
                "POST",
                target.path,
                body=body,
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            )
            resp = conn.getresponse()
            resp.read(RESPONSE_READ_LIMIT)
            status = resp.status
        except (OSError, http.client.HTTPException) as exc:
            last = exc
            continue
        finally:
            conn.close()
        if 200 <= status < 300:
            return status
        # 408, 425, 429 and 5xx may pass later; other answers (4xx, a redirect) will not.
        retryable = status in (408, 425, 429) or status >= 500
        raise DeliveryFailed(f"HTTP {status}", retryable, status)
    raise DeliveryFailed(f"{type(last).__name__}: {last}" if last else "no address", True)


def send_email(settings: Settings, to: str, subject: str, text: str) -> None:
    """Send a plain-text message through SMTP_HOST; raise DeliveryFailed on failure."""
    if not settings.smtp_host:
        raise DeliveryFailed("e-mail is not configured (SMTP_HOST)", False)
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(text)
    timeout = settings.notify_timeout_seconds
    tls = _smtp_tls_context(settings) if settings.smtp_tls != "none" else None
    try:
        smtp: smtplib.SMTP
        if settings.smtp_tls == "ssl":
            smtp = smtplib.SMTP_SSL(
                settings.smtp_host, settings.smtp_port, timeout=timeout, context=tls
            )
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
        with smtp:
            if settings.smtp_tls == "starttls":
                # Raises when the server offers no STARTTLS: never falls back to plain text.
                smtp.starttls(context=tls)
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password or "")
            smtp.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        # 4xx: try again later; 5xx: the server refuses for good (bad address, auth).
        raise DeliveryFailed(
            f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}", exc.smtp_code < 500
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise DeliveryFailed(f"recipient refused ({codes})", all(c < 500 for c in codes)) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}", True) from None


def _smtp_tls_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the server's certificate and host name: against SMTP_CA_FILE when it is set
    (e.g. a private CA), the system's CAs otherwise."""
    try:
        return ssl.create_default_context(cafile=settings.smtp_ca_file)
    except OSError as exc:  # ssl.SSLError too: a missing or unreadable file is not transient
        raise DeliveryFailed(
            f"SMTP_CA_FILE {settings.smtp_ca_file!r} cannot be used: {exc}", False
        ) from None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
