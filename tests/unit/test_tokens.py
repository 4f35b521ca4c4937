"""Access tokens: a verified token is remembered, still expires on time, and carries the
user's id and token version (a name as `sub`, from before ids, is refused)."""

import time
from typing import Any

import jwt
import pytest

from finq_api import security
from finq_api.security import (
    InvalidToken,
    TokenClaims,
    create_access_token,
    decode_access_token,
)
from finq_core.config import get_settings


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    token, lifetime = create_access_token(7, 3, settings)
    assert decode_access_token(token, settings) == TokenClaims(user_id=7, version=3)
    hits = security._verified.cache_info().hits
    assert decode_access_token(token, settings) == (7, 3)
    assert security._verified.cache_info().hits == hits + 1  # not verified twice
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + lifetime + 1)
    with pytest.raises(InvalidToken):
        decode_access_token(token, settings)


def test_a_changed_secret_verifies_afresh() -> None:
    settings = get_settings()
    token, _ = create_access_token(7, 0, settings)
    assert decode_access_token(token, settings) == (7, 0)
    rotated: Any = settings.model_copy(update={"app_secret_key": "another-secret-" + "x" * 32})
    with pytest.raises(InvalidToken):
        decode_access_token(token, rotated)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "7", "ver": 0, "iat": 0, "jti": "x"},  # no exp
        {"sub": "", "ver": 0, "exp": 9999999999, "iat": 0, "jti": "x"},
        {"sub": 7, "ver": 0, "exp": 9999999999, "iat": 0, "jti": "x"},
        {"sub": "7", "ver": 0, "exp": 1, "iat": 0, "jti": "x"},  # long expired
        {"sub": "alice", "exp": 9999999999, "iat": 0, "jti": "x"},  # a name, from before ids
        {"sub": "alice", "ver": 0, "exp": 9999999999, "iat": 0, "jti": "x"},
        {"sub": "7", "exp": 9999999999, "iat": 0, "jti": "x"},  # no version
        {"sub": "7", "ver": "0", "exp": 9999999999, "iat": 0, "jti": "x"},
        {"sub": "7", "ver": True, "exp": 9999999999, "iat": 0, "jti": "x"},
    ],
)
def test_bad_claims_are_refused_every_time(claims: dict[str, Any]) -> None:
    settings = get_settings()
    token = jwt.encode(claims, settings.app_secret_key, algorithm="HS256")
    for _ in range(2):  # failures are not remembered
        with pytest.raises(InvalidToken):
            decode_access_token(token, settings)
