"""An unexpected error answers a generic 500 with the request id, and leaks nothing; a backing
service that is down answers 503."""

import logging

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

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


@pytest.mark.parametrize(
    ("error", "service"),
    [
        (redis.ConnectionError(f"Error 111 connecting to {SECRET}"), "Redis"),
        (
            OperationalError("INSERT ...", {}, Exception(f"could not connect to {SECRET}")),
            "database",
        ),
        (PoolTimeoutError(f"QueuePool limit reached for {SECRET}"), "database"),
    ],
)
def test_a_backing_service_down_is_503_naming_it(error: Exception, service: str) -> None:
    """Whichever endpoint meets the outage: "retry shortly", not a bug, and no internals."""
    app = create_app()

    def down() -> None:
        raise error

    app.add_api_route("/down", down)
    with TestClient(app, raise_server_exceptions=False) as c:
        resp = c.get("/down", headers={"X-Request-ID": "req-87654321"})
    assert resp.status_code == 503
    assert service in resp.json()["detail"] and resp.json()["request_id"] == "req-87654321"
    assert resp.headers["Retry-After"] == "5"
    assert SECRET not in resp.text and "Traceback" not in resp.text
