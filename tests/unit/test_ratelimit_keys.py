"""Whom the global rate limit counts: the account behind a valid token, else the address."""

import jwt
from starlette.requests import Request

from finq_api.ratelimit import global_key
from finq_api.security import create_access_token
from finq_core.config import get_settings


def request(
    headers: dict[str, str] | None = None, query: str = "", peer: str = "203.0.113.7"
) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/api/v1/tasks",
            "headers": raw,
            "query_string": query.encode(),
            "client": (peer, 50000),
        }
    )


def test_a_valid_token_is_counted_per_account_whatever_the_address() -> None:
    token, _ = create_access_token(42, 0, get_settings())
    for peer in ("203.0.113.7", "198.51.100.9"):
        assert global_key(request({"Authorization": f"Bearer {token}"}, peer=peer)) == "user:42"
    # A token in the query string is not a credential (stream tickets replaced it).
    assert global_key(request(query=f"access_token={token}")) == "ip:203.0.113.7"


def test_no_token_or_a_forged_one_is_counted_per_address() -> None:
    assert global_key(request()) == "ip:203.0.113.7"
    forged = jwt.encode(
        {"sub": "42", "ver": 0, "exp": 9999999999, "iat": 0, "jti": "x"},
        "not-the-key",
        algorithm="HS256",
    )
    assert global_key(request({"Authorization": f"Bearer {forged}"})) == "ip:203.0.113.7"
    assert global_key(request({"Authorization": "Basic YWxpY2U6eA=="})) == "ip:203.0.113.7"
