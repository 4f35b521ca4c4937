"""Settings: production refuses weak secrets; lists come from comma-separated variables; the
per-service settings are bounded and checked by the start-up preflight."""

import secrets

import pytest
from pydantic import ValidationError

from finq_core.config import (
    EXAMPLE_SECRET,
    MIN_PASSWORD_LENGTH,
    ApiServerSettings,
    Settings,
    WorkerMetricsSettings,
    preflight,
    secret_problem,
)

RANDOM_KEY = secrets.token_urlsafe(48)


@pytest.mark.parametrize(
    "secret", ["", "short", EXAMPLE_SECRET, "change-me-please-" * 3, "ab" * 24, "x" * 48]
)
def test_production_refuses_a_weak_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="app_secret_key"):
        Settings(app_env="production", app_secret_key=secret)


def test_production_refuses_the_default_secret_when_none_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("APP_SECRET_KEY", raising=False)
    with pytest.raises(ValidationError, match="app_secret_key"):
        Settings(app_env="production", _env_file=None)


def test_production_accepts_a_long_random_secret() -> None:
    s = Settings(app_env="production", app_secret_key=RANDOM_KEY)
    assert s.app_env == "production"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("change-me-admin-password", "placeholder"),
        ("ChangeMe-0123456789abcdef", "placeholder"),
        ("password", "placeholder"),
        ("Tr0ub4dor&3", "fewer than 16"),
        ("abcabcabcabcabcabc", "different characters"),
        (secrets.token_urlsafe(24), None),
    ],
)
def test_secret_problems_name_what_is_wrong(value: str, problem: str | None) -> None:
    found = secret_problem(value, MIN_PASSWORD_LENGTH)
    assert (found is None) if problem is None else (problem in str(found)), found


def test_weak_secrets_are_accepted_outside_production() -> None:
    s = Settings(
        app_env="development",
        app_secret_key="short",
        admin_password="change-me-admin-password",
        redis_url="redis://:redis@127.0.0.1:6379/0",
    )
    assert s.admin_password == "change-me-admin-password"


def test_a_refused_secret_is_not_echoed_in_the_error() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(app_env="production", app_secret_key=RANDOM_KEY, admin_password="hunter2-xyz")
    assert "hunter2-xyz" not in str(refused.value)


def test_csv_lists_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.1")
    s = Settings()
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.trusted_proxies == ["10.0.0.1"]


def test_soft_limit_is_below_hard_limit() -> None:
    s = Settings(default_task_timeout=60)
    assert s.soft_time_limit < s.default_task_timeout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GUNICORN_WORKERS", "0"),
        ("GUNICORN_WORKERS", "65"),
        ("GUNICORN_KEEPALIVE", "-1"),
        ("GUNICORN_KEEPALIVE", "3601"),
        ("GUNICORN_TIMEOUT", "-1"),
        ("GUNICORN_TIMEOUT", "3601"),
        ("GUNICORN_GRACEFUL_TIMEOUT", "-1"),
        ("GUNICORN_GRACEFUL_TIMEOUT", "3601"),
        ("GUNICORN_MAX_REQUESTS", "-1"),
        ("GUNICORN_MAX_REQUESTS", "10000001"),
        ("API_BIND", ""),
        ("FORWARDED_ALLOW_IPS", ""),
    ],
)
def test_api_server_settings_are_bounded(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.lower()):
        ApiServerSettings()


def test_api_server_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ApiServerSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    s = ApiServerSettings()
    assert s.api_bind == "0.0.0.0:8000"
    assert s.api_name is None
    assert (s.gunicorn_workers, s.gunicorn_keepalive, s.gunicorn_timeout) == (1, 75, 60)
    assert (s.gunicorn_graceful_timeout, s.gunicorn_max_requests) == (20, 0)
    assert s.forwarded_allow_ips == "127.0.0.1,::1"


@pytest.mark.parametrize("value", ["-1", "65536"])
def test_worker_metrics_port_is_bounded(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WORKER_METRICS_PORT", value)
    with pytest.raises(ValidationError, match="worker_metrics_port"):
        WorkerMetricsSettings()


def test_worker_metrics_port_zero_means_no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_METRICS_PORT", "0")
    assert WorkerMetricsSettings().worker_metrics_port == 0


@pytest.mark.parametrize(
    ("variable", "value"), [("GUNICORN_WORKERS", "0"), ("WORKER_METRICS_PORT", "70000")]
)
def test_preflight_checks_every_settings_class(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert preflight() == 2
    assert f"refusing to start: {variable}:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value"),
    [("WORKER_QUEUES", "normal,urgent"), ("WORKER_QUEUES", ""), ("WORKER_NAME", "no-at-sign")],
)
def test_the_worker_launch_settings_are_checked(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.lower()):
        Settings()


def test_worker_queues_come_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKER_QUEUES", "high, normal")
    assert Settings().worker_queues == ["high", "normal"]
