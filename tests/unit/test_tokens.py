"""Access tokens: a verified token is remembered, and still expires on time."""

import time
from typing import Any

import jwt
import pytest

from finq_api import security
from finq_api.security import InvalidToken, create_access_token, decode_access_token
from finq_core.config import get_settings


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    token, lifetime = create_access_token("alice", settings)
    assert decode_access_token(token, settings) == "alice"
    hits = security._verified.cache_info().hits
    assert decode_access_token(token, settings) == "alice"
    assert security._verified.cache_info().hits == hits + 1  # not verified twice
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + lifetime + 1)
    with pytest.raises(InvalidToken):
        decode_access_token(token, settings)


def test_a_changed_secret_verifies_afresh() -> None:
    settings = get_settings()
    token, _ = create_access_token("alice", settings)
    assert decode_access_token(token, settings) == "alice"
    rotated: Any = settings.model_copy(update={"app_secret_key": "another-secret-" + "x" * 32})
    with pytest.raises(InvalidToken):
        decode_access_token(token, rotated)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "alice", "iat": 0, "jti": "x"},  # no exp
        {"sub": "", "exp": 9999999999, "iat": 0, "jti": "x"},
        {"sub": 7, "exp": 9999999999, "iat": 0, "jti": "x"},
        {"sub": "alice", "exp": 1, "iat": 0, "jti": "x"},  # long expired
    ],
)
def test_bad_claims_are_refused_every_time(claims: dict[str, Any]) -> None:
    settings = get_settings()
    token = jwt.encode(claims, settings.app_secret_key, algorithm="HS256")
    for _ in range(2):  # failures are not remembered
        with pytest.raises(InvalidToken):
            decode_access_token(token, settings)
