"""Who may open a live stream, and how many: stream tickets and the per-user count.

A browser's EventSource cannot send an Authorization header, and a token in the URL would
reach nginx's error log. Instead the page asks for a ticket (with its header): a random value
for one task, kept in Redis for STREAM_TICKET_SECONDS under its SHA-256 and deleted by the
first stream that presents it (GETDEL), so a ticket seen anywhere later is worthless.

Open streams are counted per user across replicas in one sorted set per user: a member per
stream, scored with the time its lease ends. A stream renews its lease while open and removes
it when it ends; a replica that dies stops renewing, and its streams stop counting after
LEASE_SECONDS.
"""

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from finq_api.hub import commands

TICKET_BYTES = 32
# The form of a ticket (token_urlsafe of TICKET_BYTES): anything else is refused unread.
TICKET_LENGTH = 43
LEASE_SECONDS = 90
RENEW_SECONDS = 30.0

# Drops expired leases, then adds one if the user is under the cap: 1 when added, else 0.
# Redis' own clock scores the leases, so replicas' clocks need not agree.
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
_RENEW = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
if redis.call('ZADD', KEYS[1], 'XX', 'CH', t + tonumber(ARGV[1]), ARGV[2]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 1
"""


def _ticket_key(ticket: str) -> str:
    return "finq:stream-ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


def _streams_key(user_id: int) -> str:
    return f"finq:streams:{user_id}"


def well_formed(ticket: str) -> bool:
    return len(ticket) == TICKET_LENGTH and ticket.replace("-", "").replace("_", "").isalnum()


async def issue_ticket(user_id: int, version: int, task_id: uuid.UUID, ttl: int) -> str:
    """A ticket for the user under their current token version: a password or role change,
    or deletion, before it is used makes it worthless (deps.get_stream_user)."""
    ticket = secrets.token_urlsafe(TICKET_BYTES)
    await commands().set(_ticket_key(ticket), f"{user_id}:{version}:{task_id}", ex=ttl)
    return ticket


async def redeem_ticket(ticket: str, task_id: str) -> tuple[int, int] | None:
    """(user id, token version) a ticket was issued to, if it is unused, unexpired and for
    this task; it is spent either way."""
    if not well_formed(ticket):
        return None
    value = await commands().getdel(_ticket_key(ticket))
    if not isinstance(value, str):
        return None
    user_id, version, for_task = [*value.split(":", 2), "", ""][:3]
    try:
        same = uuid.UUID(for_task) == uuid.UUID(task_id)
    except ValueError:
        return None
    if not (same and user_id.isdigit() and version.isdigit()):
        return None
    return int(user_id), int(version)


@dataclass(frozen=True)
class Lease:
    """One open stream counted against its user."""

    key: str
    member: str

    async def renew(self) -> None:
        await commands().eval(_RENEW, 1, self.key, LEASE_SECONDS, self.member)  # type: ignore[misc]

    async def release(self) -> None:
        await commands().zrem(self.key, self.member)


async def acquire(user_id: int, cap: int) -> Lease | None:
    """A lease for one more stream of the user, or None when the user has `cap` open."""
    lease = Lease(_streams_key(user_id), uuid.uuid4().hex)
    added = await commands().eval(_ACQUIRE, 1, lease.key, cap, LEASE_SECONDS, lease.member)  # type: ignore[misc]
    return lease if added == 1 else None
