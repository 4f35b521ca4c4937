"""Password hashing (argon2id) and access tokens (JWT, HS256).

Every way a token can be wrong raises the same `InvalidToken`, so the API answers every bad
token identically and an attacker learns nothing about which check failed.
"""

import time
import uuid
from datetime import timedelta
from functools import lru_cache
from typing import Any, NamedTuple

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


class TokenClaims(NamedTuple):
    """Whom a token speaks for: the user's immutable id (`sub`) and the token version it was
    issued under (`ver`); the account must still exist with that version (finq_core.accounts)."""

    user_id: int
    version: int


def create_access_token(user_id: int, version: int, settings: Settings) -> tuple[str, int]:
    """Return (token, lifetime in seconds)."""
    now = utcnow()
    lifetime = timedelta(minutes=settings.access_token_expire_minutes)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "ver": version,
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, settings.app_secret_key, algorithm=ALGORITHM)
    return token, int(lifetime.total_seconds())


# A verified token is remembered with its claims and expiry, keyed by the secret too (a new
# APP_SECRET_KEY verifies afresh); a hit re-checks only the expiry. Failures are never cached,
# so a forged token always pays the full check. Only the signature is cached: whether the
# account still exists with the token's version is read at every request (deps).
VERIFIED_TOKENS_CACHED = 4096


@lru_cache(maxsize=VERIFIED_TOKENS_CACHED)
def _verified(token: str, secret: str) -> tuple[TokenClaims, float]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "ver", "exp", "iat", "jti"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken() from exc
    sub, ver, exp = claims.get("sub"), claims.get("ver"), claims.get("exp")
    # A name as `sub` (tokens before ids) or a non-integer version is refused like a forgery.
    if not isinstance(sub, str) or not sub.isdigit() or not sub.isascii():
        raise InvalidToken()
    if not isinstance(ver, int) or isinstance(ver, bool) or not isinstance(exp, int | float):
        raise InvalidToken()
    return TokenClaims(int(sub), ver), float(exp)


def decode_access_token(token: str, settings: Settings) -> TokenClaims:
    """The claims of a validly signed, unexpired token; `InvalidToken` for anything else
    (incl. alg=none)."""
    claims, exp = _verified(token, settings.app_secret_key)
    if exp <= time.time():  # PyJWT's own rule (no leeway): expired at `exp`
        raise InvalidToken()
    return claims
