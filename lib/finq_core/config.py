"""All settings, read once from the environment (and `.env`).

`Settings` is shared by every service; `ApiServerSettings`, `WorkerMetricsSettings` and
`FlowerSettings` hold what one process of one service needs. Every setting NAME may instead be
read from a file named by NAME_FILE (Docker secrets, the convention of the official postgres
and redis images): `FileVariables` below. Every field is in `.env.example` or exempted by name
in tests/unit/test_env_example.py, which fails when the two drift. PROMETHEUS_MULTIPROC_DIR is
not a setting: prometheus_client reads it itself. With APP_ENV=production every secret is
checked at start (refuse_weak): placeholders, known defaults, short or repetitive values are
refused by name.
"""

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

EXAMPLE_SECRET = "change-me-to-a-long-random-string"  # noqa: S105 - the placeholder we refuse
# With APP_ENV=production (docs/security.md#secrets): keys that sign (APP_SECRET_KEY,
# WEBHOOK_SECRET) need MIN_SECRET_LENGTH characters, passwords MIN_PASSWORD_LENGTH; both at
# least MIN_DISTINCT_CHARACTERS different characters and no placeholder word.
MIN_SECRET_LENGTH = 32
MIN_PASSWORD_LENGTH = 16
MIN_DISTINCT_CHARACTERS = 8
PLACEHOLDER_WORDS = ("change-me", "changeme", "change_me", "replace-me", "placeholder", "example")
KNOWN_DEFAULTS = {"admin", "password", "secret", "finq", "postgres", "redis", "flower", "guest"}
GENERATE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
# Secrets never reach an error message (hide_input_in_errors).
FROM_ENVIRONMENT = SettingsConfigDict(
    env_file=".env", extra="ignore", case_sensitive=False, hide_input_in_errors=True
)
AppEnv = Literal["development", "test", "production"]
RoleName = Literal["admin", "user"]  # finq_core.models.Role's values
# finq_core.broker's queues (tests/unit/test_env_example.py keeps the two in step).
QueueName = Literal["notify", "charts", "high", "normal", "low"]


def secret_problem(value: str, min_length: int) -> str | None:
    """Why `value` is not fit to be a production secret, or None when it is."""
    lowered = value.lower()
    if any(word in lowered for word in PLACEHOLDER_WORDS) or lowered in KNOWN_DEFAULTS:
        return "is a placeholder or a well-known default"
    if len(value) < min_length:
        return f"has {len(value)} characters, fewer than {min_length}"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"has fewer than {MIN_DISTINCT_CHARACTERS} different characters"
    return None


def refuse_weak(value: str | None, info: ValidationInfo, min_length: int, what: str) -> None:
    """Raise, naming the variable, when production would run with a weak secret."""
    if value is None or info.data.get("app_env") != "production":
        return
    problem = secret_problem(value, min_length)
    if problem:
        raise ValueError(
            f"{what} {problem}; APP_ENV=production needs a random value (for example: {GENERATE})"
        )


FILE_SUFFIX = "_FILE"


def _admins() -> list[RoleName]:
    return ["admin"]


class FileVariables(PydanticBaseSettingsSource):
    """NAME_FILE=/run/secrets/name: the setting NAME is that file's content (without trailing
    line breaks), for every field of the class. The environment's NAME_FILE is read before the
    `.env` file's NAME (the environment wins, as for plain variables); NAME and NAME_FILE both
    in the environment is refused, as is a file that cannot be read."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        environ: Mapping[str, str | None],
        dotenv: Mapping[str, str | None],
    ) -> None:
        super().__init__(settings_cls)
        self.environ = {key.upper(): value for key, value in environ.items() if value is not None}
        self.dotenv = {key.upper(): value for key, value in dotenv.items() if value is not None}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            variable = name.upper()
            pointer = self.environ.get(variable + FILE_SUFFIX)
            if pointer is None and variable not in self.environ:
                pointer = self.dotenv.get(variable + FILE_SUFFIX)
            if not pointer:
                continue
            if variable in self.environ:
                raise SettingsError(
                    f"{variable} and {variable}{FILE_SUFFIX} are both set: keep one of them"
                )
            values[name] = read_secret_file(variable + FILE_SUFFIX, pointer)
        return values


def read_secret_file(variable: str, path: str) -> str:
    """The secret in PATH, named by VARIABLE in the error when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(f"{variable}: cannot read {path}: {reason}") from exc


class FinqSettings(BaseSettings):
    """Reads the environment, then NAME_FILE variables, then `.env` (FROM_ENVIRONMENT)."""

    model_config = FROM_ENVIRONMENT

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = env_settings.env_vars if isinstance(env_settings, EnvSettingsSource) else {}
        dotenv = (
            dotenv_settings.env_vars if isinstance(dotenv_settings, DotEnvSettingsSource) else {}
        )
        files = FileVariables(settings_cls, environ, dotenv)
        return init_settings, env_settings, files, dotenv_settings, file_secret_settings


def _every_queue() -> list[QueueName]:
    return ["notify", "charts", "high", "normal", "low"]


class Settings(FinqSettings):
    app_env: AppEnv = "development"
    # Secrets: checked at start with APP_ENV=production (refuse_weak), defaults included.
    app_secret_key: str = Field(default=EXAMPLE_SECRET, validate_default=True)
    access_token_expire_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    admin_username: str | None = None
    admin_password: str | None = None

    database_url: str = "sqlite:///.run/data/finq.db"
    redis_url: str = "redis://127.0.0.1:6380/0"

    log_level: str = "INFO"
    log_json: bool = True
    # How long a service waits at start for Redis, the database and the migration
    # (finq_core.dependencies) before it exits for its supervisor to restart it.
    dependency_wait_seconds: int = Field(default=120, ge=0, le=3600)

    # Task execution.
    default_task_timeout: int = Field(default=300, ge=5, le=24 * 3600)
    max_retry_attempts: int = Field(default=3, ge=0, le=20)
    result_ttl_days: int = Field(default=30, ge=1)
    # How far ahead (or back) a task's `run_at` may lie.
    run_at_max_days: int = Field(default=366, ge=1, le=3660)
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    # Queues a worker consumes, polled in this order (deploy/finq-service passes them on).
    worker_queues: Annotated[list[QueueName], NoDecode] = Field(
        default_factory=_every_queue, min_length=1
    )
    # The worker's Celery node name (%h: the host name); set per replica by the launchers.
    worker_name: str = Field(default="worker@%h", pattern=r"^[^@\s]+@[^@\s]+$")
    # CPU niceness of a worker and its pool (19: lowest): on shared cores the API's requests
    # go first, so queued calculations never make the front door slow.
    worker_nice: int = Field(default=10, ge=0, le=19)
    # The pool processes run under SCHED_IDLE: any runnable process of normal policy (the API,
    # nginx, the worker's own main process) preempts them at once, which niceness alone does
    # not do (issue 20: submit p99 0.41-0.65 of nice 10's); they still take every idle cycle.
    worker_sched_idle: bool = True
    progress_interval_seconds: float = Field(default=0.25, ge=0.05, le=10)
    # Celery task events feed Flower's Tasks tab at a CPU cost on every task; workers stay
    # visible in Flower without them (heartbeats).
    task_events: bool = False

    # The broker's repair (finq_core.repair, run by the beat): a queued record whose message
    # is in no queue list nor in Celery's unacknowledged hash for this long is queued again.
    broker_repair_grace_seconds: int = Field(default=60, ge=2, le=3600)
    # How often a sweep of the broker's lists starts while none is running.
    broker_repair_interval_seconds: float = Field(default=15.0, ge=0.5, le=600)
    # Broker entries a beat tick reads at most (a tick each second): the cost bound of a pass.
    broker_repair_scan_budget: int = Field(default=5000, ge=100, le=100_000)

    # HTTP edge.
    # Body limits: every route's unless it has its own (finq_api.guard). Task and schedule
    # submissions carry parameter lists (1,000,000 Black-Scholes elements fit in 16 MiB).
    max_body_bytes: int = Field(default=65_536, ge=1024, le=256 * 1024 * 1024)
    task_body_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"]
    )
    rate_limit_submit: str = "120/minute"
    rate_limit_login: str = "10/minute"
    rate_limit_global: str = "600/minute"
    rate_limit_enabled: bool = True

    # Per-user quotas (finq_core.lifecycle), counted in the database at every submission,
    # retry, schedule creation and schedule run: tasks waiting (PENDING or RETRYING) and
    # schedules. Counts, not an order: which user's task runs first is not decided here.
    quota_queued_tasks: int = Field(default=200, ge=1, le=1_000_000)
    quota_schedules: int = Field(default=20, ge=1, le=10_000)
    # Tasks of one user RUNNING at once: a worker's claim of a PENDING task over it hands the
    # task back to the beat's dispatcher (finq_core.store.defer_pending), losing nothing.
    quota_running_tasks: int = Field(default=8, ge=1, le=100_000)
    # The shortest gap allowed between two runs of a schedule, seconds.
    schedule_min_interval: int = Field(default=60, ge=1, le=24 * 3600)
    # Roles allowed to submit `priority: "high"` (comma-separated; empty: nobody).
    high_priority_roles: Annotated[list[RoleName], NoDecode] = Field(default_factory=_admins)

    # Uploads (CSV price tables for csv_portfolio_analytics).
    upload_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    upload_max_assets: int = Field(default=200, ge=1, le=200)
    upload_max_rows: int = Field(default=100_000, ge=3, le=1_000_000)

    # Notifications when a task reaches a final status.
    webhook_secret: str | None = None
    webhook_allow_private: bool = False
    notify_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    notify_max_attempts: int = Field(default=5, ge=1, le=20)
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "ssl"] = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "finq@localhost"
    smtp_ca_file: str | None = None

    # Stored results (docs/security.md): the most one task may store (more fails the task),
    # the largest result a task view or webhook carries inline (bigger ones: a link), and the
    # stored results one user may keep before new submissions are refused (429).
    result_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    result_inline_max_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    quota_result_bytes: int = Field(
        default=2 * 1024 * 1024 * 1024, ge=1024 * 1024, le=1024 * 1024 * 1024 * 1024
    )

    # Batches (POST /api/v1/batches, finq_core.batches): the most items one batch may hold,
    # its own body limit, the items waiting in one owner's unfinished batches (429 beyond),
    # how long a chunk of items should take (its size follows from the type's per-item cost,
    # finq_core.batch_runs.ITEM_SECONDS), and how many chunks of one batch are on the broker
    # at once: a single task queued meanwhile waits behind at most that many chunks.
    batch_max_items: int = Field(default=100_000, ge=1, le=1_000_000)
    batch_body_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)
    quota_batch_items: int = Field(default=200_000, ge=1, le=10_000_000)
    batch_chunk_seconds: float = Field(default=0.1, ge=0.01, le=5.0)
    batch_chunks_in_flight: int = Field(default=4, ge=1, le=256)

    # Live streams (GET /tasks/{id}/events). Open streams per user, counted across replicas
    # (429 beyond); a stream's lifetime, after which it ends and the browser reconnects; how
    # long a stream ticket (POST /tasks/{id}/events/ticket) stays valid if unused.
    streams_per_user: int = Field(default=20, ge=1, le=10_000)
    stream_max_seconds: int = Field(default=3600, ge=1, le=86_400)
    stream_ticket_seconds: int = Field(default=30, ge=1, le=600)

    @field_validator(
        "cors_origins", "trusted_proxies", "high_priority_roles", "worker_queues", mode="before"
    )
    @classmethod
    def _split_csv(cls, value: object) -> object:
        """Accept `a,b,c` from the environment as well as a JSON list."""
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator(
        "webhook_secret",
        "smtp_host",
        "smtp_username",
        "smtp_password",
        "smtp_ca_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`SMTP_HOST=` in an env file means "not configured", not the empty host name."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("app_secret_key", "webhook_secret")
    @classmethod
    def _keys_are_random_in_production(cls, value: str | None, info: ValidationInfo) -> str | None:
        refuse_weak(value, info, MIN_SECRET_LENGTH, "the key")
        return value

    @field_validator("admin_password", "smtp_password")
    @classmethod
    def _passwords_are_strong_in_production(
        cls, value: str | None, info: ValidationInfo
    ) -> str | None:
        # An SMTP password is the provider's: only placeholders are refused.
        minimum = MIN_PASSWORD_LENGTH if info.field_name == "admin_password" else 1
        refuse_weak(value or None, info, minimum, "the password")
        return value

    @field_validator("database_url", "redis_url")
    @classmethod
    def _url_passwords_are_strong_in_production(cls, value: str, info: ValidationInfo) -> str:
        # Compose builds these URLs from POSTGRES_PASSWORD and REDIS_PASSWORD.
        source = {"database_url": "POSTGRES_PASSWORD", "redis_url": "REDIS_PASSWORD"}
        password = urlsplit(value).password
        what = f"the password in it ({source[str(info.field_name)]} in compose)"
        refuse_weak(password, info, MIN_PASSWORD_LENGTH, what)
        return value

    @property
    def soft_time_limit(self) -> int:
        """The soft limit raises inside the task so it can record 'timed out' before the kill."""
        return max(1, self.default_task_timeout - 5)


class ApiServerSettings(FinqSettings):
    """One API replica: its gunicorn server (fastapi-app/gunicorn.conf.py) and its name."""

    api_bind: str = Field(default="0.0.0.0:8000", min_length=1)
    # Gunicorn's process title and X-Served-By; unset or empty: "finq-api" and the host name.
    api_name: str | None = None
    gunicorn_workers: int = Field(default=1, ge=1, le=64)
    # 0 turns the keepalive, the worker timeout and recycling off (gunicorn's own meaning).
    gunicorn_keepalive: int = Field(default=75, ge=0, le=3600)
    gunicorn_timeout: int = Field(default=60, ge=0, le=3600)
    gunicorn_graceful_timeout: int = Field(default=20, ge=0, le=3600)
    gunicorn_max_requests: int = Field(default=0, ge=0, le=10_000_000)
    forwarded_allow_ips: str = Field(default="127.0.0.1,::1", min_length=1)
    # Requests one API process takes on before it answers 503 with Retry-After at once (not
    # counting /health and /metrics, nor responses already streaming): past this, a request
    # would only queue for a thread, its client give up, and the work be done for nobody.
    # 0: no bound.
    api_max_in_flight: int = Field(default=64, ge=0, le=10_000)


class WorkerMetricsSettings(FinqSettings):
    """The Prometheus endpoint a worker replica's main process serves."""

    # 0: no endpoint.
    worker_metrics_port: int = Field(default=9808, ge=0, le=65535)
    worker_metrics_address: str = Field(default="0.0.0.0", min_length=1)


class FlowerSettings(FinqSettings):
    """Flower (deploy/finq-service flower): where it listens and its basic-auth accounts."""

    model_config = FROM_ENVIRONMENT

    app_env: AppEnv = "development"
    flower_address: str = Field(default="0.0.0.0", min_length=1)
    flower_port: int = Field(default=5555, ge=1, le=65535)
    flower_url_prefix: str = "flower"
    # `user:password[,user2:password2]`; required by the flower role, unset elsewhere.
    flower_basic_auth: str | None = None

    @field_validator("flower_basic_auth")
    @classmethod
    def _passwords_are_strong_in_production(
        cls, value: str | None, info: ValidationInfo
    ) -> str | None:
        if not (value or "").strip():
            return None  # an empty line in .env: not configured
        for account in (value or "").split(","):
            user, sep, password = account.partition(":")
            if not (user and sep and password):
                raise ValueError("must be user:password (comma-separated for several accounts)")
            refuse_weak(password, info, MIN_PASSWORD_LENGTH, f"the password of {user!r}")
        return value


# Every settings class; `python -m finq_core.config` checks them all before any process starts.
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    Settings,
    ApiServerSettings,
    WorkerMetricsSettings,
    FlowerSettings,
)


@lru_cache
def get_settings() -> Settings:
    return Settings()


@lru_cache
def get_api_server_settings() -> ApiServerSettings:
    return ApiServerSettings()


@lru_cache
def get_worker_metrics_settings() -> WorkerMetricsSettings:
    return WorkerMetricsSettings()


def preflight() -> int:
    """`python -m finq_core.config`: exit 2 with a plain message (no traceback) when the
    environment is unusable, e.g. production without a real APP_SECRET_KEY."""
    import sys

    from pydantic import ValidationError

    failed = False
    for settings_class in SETTINGS_CLASSES:
        try:
            settings_class()
        except SettingsError as exc:  # an unreadable NAME_FILE, or NAME and NAME_FILE both set
            failed = True
            print(f"finq: refusing to start: {exc}", file=sys.stderr)
        except ValidationError as exc:
            failed = True
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]).upper() or "configuration"
                print(f"finq: refusing to start: {field}: {err['msg']}", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(preflight())
