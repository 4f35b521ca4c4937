"""An unexpected error answers a generic 500 with the request id, and leaks nothing."""

import logging

import pytest
from fastapi.testclient import TestClient

from finq_api.main import create_app

SECRET = "postgresql://finq:hunter2@db.internal:5432/finq"


def test_unexpected_error_is_generic_json_with_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app()

    def boom() -> None:
        raise RuntimeError(f"could not connect to {SECRET}")

    app.add_api_route("/boom", boom)
    logging.getLogger().addHandler(caplog.handler)  # create_app installed its own handler
    with caplog.at_level(logging.ERROR), TestClient(app, raise_server_exceptions=False) as c:
        resp = c.get("/boom", headers={"X-Request-ID": "req-12345678"})
    assert resp.status_code == 500
    assert resp.json() == {"detail": "Internal server error", "request_id": "req-12345678"}
    assert SECRET not in resp.text and "Traceback" not in resp.text
    assert resp.headers["X-Request-ID"] == "req-12345678"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # The traceback is kept for operators, in the server log.
    assert any(r.exc_info and SECRET in str(r.exc_info[1]) for r in caplog.records)
