"""What the task lifecycle refuses, as exceptions of its own: the API answers each with its
HTTP status (finq_api.errors), other callers handle them as they see fit."""

from collections.abc import Iterable
from typing import NamedTuple

Location = tuple[str | int, ...]


class Problem(NamedTuple):
    """One wrong input: where it is in the request (e.g. ("body", "params", "annual_rate")),
    why it is wrong, and pydantic's error type (or "value_error")."""

    loc: Location
    msg: str
    type: str = "value_error"


class InvalidInput(Exception):  # noqa: N818 - reads as what the caller sent
    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in self.problems))


class TaskNotFound(LookupError):  # noqa: N818 - reads as an outcome
    """No such task, or not the caller's: the same answer, so ids cannot be probed."""

    detail = "Task not found"


class BatchNotFound(LookupError):  # noqa: N818 - reads as an outcome
    """No such batch, or not the caller's: the same answer, so ids cannot be probed."""

    detail = "Batch not found"


class Refusal(Exception):  # noqa: N818 - the base of the refusals below
    """A refusal whose `detail` tells the caller why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TaskStateConflict(Refusal):
    """The task's status does not allow what was asked."""


class QueueUnavailable(Exception):  # noqa: N818 - reads as an outcome
    """Redis refused a send or a flag: nothing was queued or changed."""

    detail = "The task queue (Redis) is unavailable; nothing was queued. Retry shortly."


class NotAllowed(Refusal):
    """The caller's role does not allow what was asked."""


class ChartNotFound(Refusal):
    """The task has no chart, and will not have one."""


class QuotaExceeded(Refusal):
    """A per-user quota is full. `retry_after`: seconds worth waiting before trying again, or
    None when only the caller can free room (e.g. by deleting a schedule)."""

    def __init__(self, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class StorageQuotaExceeded(Refusal):
    """The caller's stored results exceed their quota (QUOTA_RESULT_BYTES)."""


class ResultNotFound(Refusal):
    """The task has no stored result (not finished, failed, or retried since)."""


class UsernameTaken(Refusal):
    """The username (compared ignoring case) belongs to an account, or did to a deleted one:
    a name is never given to a second account."""

    field = "username"


class UserNotFound(Refusal):
    """No such account, or it was deleted."""


class AccountConflict(Refusal):
    """The account's state does not allow what was asked (e.g. an admin deleting themselves)."""


class DependencyNotReady(Exception):  # noqa: N818 - reads as an outcome
    """A dependency answered but is not usable yet, e.g. the schema awaits its migration
    (finq_core.dependencies waits on it at start-up)."""
