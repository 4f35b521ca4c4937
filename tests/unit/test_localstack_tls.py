"""The local stack's TLS settings (scripts/_localstack_settings.py) and the listener files they
render (scripts/_localstack_render.py): both files or neither, each must exist; HTTPS gets its
own port and plain HTTP only redirects to it; no certificate, plain HTTP as before."""

import argparse
from pathlib import Path

import pytest
from _localstack_render import _render_edge
from _localstack_settings import _tls, public_url

FIXED = argparse.Namespace(free_ports=False)


def test_no_certificate_means_plain_http_as_before(tmp_path: Path) -> None:
    assert _tls({}, FIXED) == {}
    s = {"HTTP_PORT": "8080"}
    (tmp_path / "nginx").mkdir()
    _render_edge(tmp_path, s)
    listen = (tmp_path / "nginx" / "listen.conf").read_text()
    assert "listen 127.0.0.1:8080 default_server;" in listen
    assert "ssl" not in listen
    assert "server" not in (tmp_path / "nginx" / "redirect.conf").read_text()
    assert public_url(s) == "http://127.0.0.1:8080"


@pytest.mark.parametrize("given", ["TLS_CERT_FILE", "TLS_KEY_FILE"])
def test_a_certificate_without_its_key_or_the_reverse_is_refused(
    tmp_path: Path, given: str
) -> None:
    (tmp_path / "f.pem").write_text("x")
    with pytest.raises(SystemExit, match="TLS_CERT_FILE and TLS_KEY_FILE go together"):
        _tls({given: str(tmp_path / "f.pem")}, FIXED)


def test_a_missing_certificate_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("x")
    env = {"TLS_CERT_FILE": str(tmp_path / "nope.pem"), "TLS_KEY_FILE": str(tmp_path / "key.pem")}
    with pytest.raises(SystemExit, match=r"TLS_CERT_FILE: no such file: .*nope\.pem"):
        _tls(env, FIXED)


def test_a_certificate_serves_https_on_its_port_and_http_redirects_there(
    tmp_path: Path,
) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    env = {
        "TLS_CERT_FILE": str(tmp_path / "cert.pem"),
        "TLS_KEY_FILE": str(tmp_path / "key.pem"),
        "HTTPS_PORT": "9443",
    }
    s = {"HTTP_PORT": "8080", **_tls(env, FIXED)}
    assert public_url(s) == "https://127.0.0.1:9443"
    (tmp_path / "nginx").mkdir()
    _render_edge(tmp_path, s)
    listen = (tmp_path / "nginx" / "listen.conf").read_text()
    assert "listen 127.0.0.1:9443 ssl default_server;" in listen
    assert f"ssl_certificate {tmp_path / 'cert.pem'};" in listen
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in listen
    redirect = (tmp_path / "nginx" / "redirect.conf").read_text()
    assert "listen 127.0.0.1:8080 default_server;" in redirect
    assert "return 301 https://$host:9443$request_uri;" in redirect
