"""HTTPS at the edge: a local stack given a certificate (made here with openssl, signed by a
throwaway CA) serves the API, the event stream and Flower over TLS 1.2+ with HSTS, redirects
plain HTTP to HTTPS, and a verifying client refuses a certificate it cannot trust."""

import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import LocalStack, start_stack, stop_stack
from tests.e2e.client import FINAL, submit

QUICK_LOAN = {"principal": 10000, "annual_rate": 0.05, "years": 5}
HSTS = "max-age=31536000"


@dataclass
class Pki:
    ca: Path  # the CA the server's certificate chains to
    other_ca: Path  # a CA that signed nothing the server holds
    cert: Path
    key: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, cwd=cwd, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _make_pki(d: Path) -> Pki:
    """A CA and a server certificate for 127.0.0.1 and localhost, plus an unrelated CA."""
    _make_ca(d, "finq-test-ca")
    _make_ca(d, "other-ca")
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "finq-test-ca.crt",
        "-CAkey", "finq-test-ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "server.ext", "-out", "server.crt",
        cwd=d,
    )  # fmt: skip
    return Pki(d / "finq-test-ca.crt", d / "other-ca.crt", d / "server.crt", d / "server.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[LocalStack]:
    s = start_stack(
        tmp_path_factory.mktemp("tls") / "run",
        "--api-replicas",
        "1",
        "--worker-replicas",
        "1",
        env={
            "WORKER_CONCURRENCY": "1",
            "GUNICORN_WORKERS": "1",
            "RATE_LIMIT_ENABLED": "false",
            "TLS_CERT_FILE": str(pki.cert),
            "TLS_KEY_FILE": str(pki.key),
        },
    )
    yield s
    stop_stack(s)


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@pytest.fixture(scope="module")
def admin(tls_stack: LocalStack, pki: Pki) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tls_stack.url, verify=trusting(pki.ca), timeout=30) as client:
        resp = client.post(
            "/api/v1/auth/token",
            data={"username": tls_stack.admin[0], "password": tls_stack.admin[1]},
        )
        assert resp.status_code == 200, resp.text
        client.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
        yield client


def handshake(stack: LocalStack, ctx: ssl.SSLContext, server_name: str) -> str:
    """The TLS version nginx agrees to with this client; raises when the client refuses."""
    port = int(stack.info["HTTPS_PORT"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        return str(tls.version())


def test_the_stack_given_a_certificate_serves_https_on_its_own_port(
    tls_stack: LocalStack,
) -> None:
    assert tls_stack.url == f"https://127.0.0.1:{tls_stack.info['HTTPS_PORT']}"
    assert tls_stack.info["HTTPS_PORT"] != tls_stack.info["HTTP_PORT"]


def test_a_task_is_submitted_and_followed_to_success_over_https_with_hsts(
    admin: httpx.Client,
) -> None:
    ready = admin.get("/health/ready")
    assert ready.status_code == 200
    assert ready.headers["strict-transport-security"] == HSTS
    task = submit(admin, "loan_amortization", QUICK_LOAN)
    statuses = []
    with admin.stream("GET", f"/api/v1/tasks/{task['id']}/events", timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["strict-transport-security"] == HSTS
        for line in r.iter_lines():
            if line.startswith("data: "):
                statuses.append(json.loads(line[6:])["status"])
                if statuses[-1] in FINAL:
                    break
    assert statuses[-1] == "SUCCESS", statuses
    body = admin.get(f"/api/v1/tasks/{task['id']}").json()
    assert body["status"] == "SUCCESS"


def test_flower_answers_over_https_behind_its_password(tls_stack: LocalStack, pki: Pki) -> None:
    with httpx.Client(base_url=tls_stack.url, verify=trusting(pki.ca), timeout=30) as client:
        assert client.get("/flower/").status_code == 401
        page = client.get("/flower/", auth=tls_stack.flower_auth)
    assert page.status_code == 200
    assert "Flower" in page.text
    assert page.headers["strict-transport-security"] == HSTS
    assert page.headers["x-frame-options"] == "DENY"


def test_nginx_own_answers_over_https_carry_hsts_too(tls_stack: LocalStack, pki: Pki) -> None:
    with httpx.Client(base_url=tls_stack.url, verify=trusting(pki.ca)) as client:
        resp = client.post("/api/v1/tasks", content=b"x" * 200_000)  # anonymous large body
    assert resp.status_code == 413
    assert resp.json()["detail"] == "Request body too large"
    assert resp.headers["strict-transport-security"] == HSTS


@pytest.mark.parametrize("path", ["/health/ready", "/api/v1/task-types?x=1", "/flower/"])
def test_plain_http_is_redirected_permanently_to_the_same_path_over_https(
    tls_stack: LocalStack, path: str
) -> None:
    plain = f"http://127.0.0.1:{tls_stack.info['HTTP_PORT']}"
    resp = httpx.get(plain + path, follow_redirects=False)
    assert resp.status_code == 301
    assert resp.headers["location"] == tls_stack.url + path
    assert "strict-transport-security" not in resp.headers


def test_plain_http_keeps_only_the_health_check(tls_stack: LocalStack) -> None:
    plain = f"http://127.0.0.1:{tls_stack.info['HTTP_PORT']}"
    assert httpx.get(plain + "/nginx-health").text == "ok\n"


def test_a_verifying_client_agrees_on_tls_1_2_or_newer(tls_stack: LocalStack, pki: Pki) -> None:
    assert handshake(tls_stack, trusting(pki.ca), "localhost") == "TLSv1.3"
    only_12 = trusting(pki.ca)
    only_12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(tls_stack, only_12, "localhost") == "TLSv1.2"


def test_a_verifying_client_refuses_a_certificate_from_another_ca(
    tls_stack: LocalStack, pki: Pki
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(tls_stack, trusting(pki.other_ca), "localhost")
    with (
        httpx.Client(verify=trusting(pki.other_ca)) as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get(tls_stack.url + "/health/ready")


def test_a_verifying_client_refuses_a_certificate_for_another_host_name(
    tls_stack: LocalStack, pki: Pki
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(tls_stack, trusting(pki.ca), "finq.example.org")
