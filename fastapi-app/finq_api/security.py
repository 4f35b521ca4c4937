"""Password hashing (argon2id) and access tokens (JWT, HS256).

Every way a token can be wrong raises the same `InvalidToken`, so the API answers every bad
token identically and an attacker learns nothing about which check failed.
"""

import uuid
from datetime import timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from finq_core.config import Settings
from finq_core.timeutil import utcnow

ALGORITHM = "HS256"
_hasher = PasswordHasher()
# Verified against when the user does not exist, so unknown users cost the same time.
_DUMMY_HASH = _hasher.hash("finq-timing-equaliser")


class InvalidToken(Exception):  # noqa: N818
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def create_access_token(subject: str, settings: Settings) -> tuple[str, int]:
    """Return (token, lifetime in seconds)."""
    now = utcnow()
    lifetime = timedelta(minutes=settings.access_token_expire_minutes)
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, settings.app_secret_key, algorithm=ALGORITHM)
    return token, int(lifetime.total_seconds())


def decode_access_token(token: str, settings: Settings) -> str:
    """The subject of a valid token; `InvalidToken` for anything else (incl. alg=none)."""
    try:
        claims = jwt.decode(
            token,
            settings.app_secret_key,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp", "iat", "jti"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken() from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken()
    return sub
