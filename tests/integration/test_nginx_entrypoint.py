"""The entrypoint of the compose and Kubernetes nginx (nginx/docker-entrypoint.sh) renders the
listeners from TLS_CERT_FILE/TLS_KEY_FILE: run here against this machine's nginx (through a
shim that points it at a throwaway main configuration), the rendered configuration serves
HTTPS with HSTS and redirects plain HTTP to TLS_PUBLIC_PORT; without a certificate it serves
plain HTTP only."""

import os
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "nginx" / "docker-entrypoint.sh"
NGINX = "/usr/sbin/nginx"


def _nginx_shim(d: Path) -> Path:
    """A `nginx` first on PATH that runs the real one on a main configuration in `d`."""
    (d / "conf.d").mkdir()
    (d / "nginx.conf").write_text(
        f"pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
        "events { worker_connections 64; }\n"
        f"http {{ client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n"
        f"  include {d}/conf.d/*.conf; }}\n"
    )
    bin_dir = d / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "nginx"
    shim.write_text(f'#!/bin/sh\nexec {NGINX} -p {d}/ -c {d}/nginx.conf "$@"\n')
    shim.chmod(0o755)
    return bin_dir


def _make_cert(d: Path) -> tuple[Path, Path]:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(d / "tls.key"), "-out", str(d / "tls.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    return d / "tls.crt", d / "tls.key"


def _run_nginx(tmp_path: Path, extra_env: dict[str, str]) -> Iterator[dict[str, str]]:
    bin_dir = _nginx_shim(tmp_path)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CONF_FILE": str(tmp_path / "conf.d" / "finq.conf"),
        "UPSTREAM_CONF": str(tmp_path / "finq" / "upstream.conf"),
        "LISTEN_CONF": str(tmp_path / "finq" / "listen.conf"),
        "REDIRECT_CONF": str(tmp_path / "finq" / "redirect.conf"),
        "API_SERVICE": "localhost:8000",
        "FLOWER_UPSTREAM": "localhost:5555",
        "NGINX_UPSTREAM_MODE": "static",
        "ACCESS_LOG": str(tmp_path / "access.log"),
        **extra_env,
    }
    subprocess.run(["sh", str(ENTRYPOINT), "render"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [str(bin_dir / "nginx"), "-g", "daemon off;"], env=env, start_new_session=True
    )
    try:
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGQUIT)
        proc.wait(timeout=20)


@pytest.fixture
def tls_nginx(tmp_path: Path) -> Iterator[dict[str, str]]:
    cert, key = _make_cert(tmp_path)
    http_port, https_port = free_port(), free_port()
    yield from _run_nginx(
        tmp_path,
        {
            "LISTEN_PORT": f"127.0.0.1:{http_port}",
            "TLS_PORT": f"127.0.0.1:{https_port}",
            "TLS_PUBLIC_PORT": str(https_port),
            "TLS_CERT_FILE": str(cert),
            "TLS_KEY_FILE": str(key),
        },
    )


def _up(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        httpx.get(url, verify=verify)
    except httpx.TransportError:
        return False
    return True


def test_the_entrypoint_given_a_certificate_serves_https_and_redirects_http(
    tls_nginx: dict[str, str],
) -> None:
    https = f"https://{tls_nginx['TLS_PORT']}"
    http = f"http://{tls_nginx['LISTEN_PORT']}"
    trust = ssl.create_default_context(cafile=tls_nginx["TLS_CERT_FILE"])
    wait_until(lambda: _up(https + "/nginx-health", trust), 10)
    health = httpx.get(https + "/nginx-health", verify=trust)
    assert health.text == "ok\n"
    assert health.headers["strict-transport-security"] == "max-age=31536000"
    moved = httpx.get(http + "/api/v1/task-types")
    assert moved.status_code == 301
    port = tls_nginx["TLS_PUBLIC_PORT"]
    assert moved.headers["location"] == f"https://127.0.0.1:{port}/api/v1/task-types"
    # The container's health check keeps plain HTTP.
    assert httpx.get(http + "/nginx-health").text == "ok\n"


def test_the_entrypoint_without_a_certificate_serves_plain_http_only(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/nginx-health"
    for env in _run_nginx(tmp_path, {"LISTEN_PORT": f"127.0.0.1:{port}"}):
        wait_until(lambda: _up(url), 10)
        resp = httpx.get(url)
        assert resp.text == "ok\n"
        assert "strict-transport-security" not in resp.headers
        lines = [
            line for line in Path(env["LISTEN_CONF"]).read_text().splitlines() if line[:1] != "#"
        ]
        assert lines == [f"listen 127.0.0.1:{port} default_server;"]
        with pytest.raises(httpx.TransportError):
            httpx.get(f"https://127.0.0.1:{port}/nginx-health", verify=False)


def test_the_entrypoint_refuses_a_certificate_without_its_key(tmp_path: Path) -> None:
    cert, _ = _make_cert(tmp_path)
    out = subprocess.run(
        ["sh", str(ENTRYPOINT), "render"],
        env={**os.environ, "TLS_CERT_FILE": str(cert), "LISTEN_CONF": str(tmp_path / "l.conf")},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert "TLS_CERT_FILE and TLS_KEY_FILE must both name readable files" in out.stderr
