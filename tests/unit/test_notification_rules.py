"""Webhook targets (SSRF rules), e-mail addresses and the signature, without the network:
only names that resolve locally (IP literals, localhost) are used."""

import hashlib
import hmac

import pytest

from finq_core.notifications import (
    TargetRefused,
    address_allowed,
    check_email,
    check_webhook_url,
    sign,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.7",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::1",
        "2001:db8::1",
        "64:ff9b::a00:1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not address_allowed(address)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2001:4860:4860::8888", "2606:4700:4700::1111"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(address)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://8.8.8.8/x", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("http:///nohost", "has no host"),
        ("http://user:pw@8.8.8.8/", "user name or password"),
        ("http://8.8.8.8:99999/", "not a valid URL"),
        ("http://8.8.8.8/a b", "spaces or control characters"),
        ("http://127.0.0.1:8080/hook", "resolves to 127.0.0.1"),
        ("http://localhost/hook", "loopback, private"),
        ("http://[::1]/hook", "resolves to ::1"),
        ("http://169.254.169.254/latest/meta-data", "resolves to 169.254.169.254"),
        ("http://0x7f000001/", "does not resolve to public"),  # another spelling of loopback
        ("http://host.invalid/", "does not resolve"),
        ("http://8.8.8.8/" + "a" * 2100, "longer than 2048"),
    ],
)
def test_bad_webhook_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=reason):
        check_webhook_url(url, allow_private=False)


def test_a_host_name_refusal_never_says_what_it_resolves_to() -> None:
    """Naming the address, or telling "does not resolve" from "resolves to a private address",
    would let any user map the internal DNS through the refusals."""
    reasons = []
    for host in ("localhost", "host.invalid"):
        with pytest.raises(TargetRefused) as refused:
            check_webhook_url(f"http://{host}/hook", allow_private=False)
        reason = str(refused.value)
        assert "127.0.0.1" not in reason and "::1" not in reason
        reasons.append(reason.replace(repr(host), "HOST"))
    assert reasons[0] == reasons[1]


def test_a_public_literal_passes_and_private_is_allowed_only_when_configured() -> None:
    target = check_webhook_url("https://8.8.8.8/hooks/finq?x=1", allow_private=False)
    assert (target.scheme, target.host, target.port, target.path) == (
        "https",
        "8.8.8.8",
        443,
        "/hooks/finq?x=1",
    )
    local = check_webhook_url("http://127.0.0.1:9/h", allow_private=True)
    assert local.addresses == ("127.0.0.1",) and local.port == 9


def test_email_addresses() -> None:
    assert check_email(" ops@example.com ") == "ops@example.com"
    for bad in (
        "nobody",
        "a@b",
        "a b@example.com",
        "x@example.com\r\nBcc: y@example.com",
        "@example.com",
        "a@@example.com",
        "a" * 250 + "@example.com",
    ):
        with pytest.raises(TargetRefused):
            check_email(bad)


def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"id":"x","status":"SUCCESS"}'
    expected = hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    assert sign(body, "k3y") == f"sha256={expected}"
