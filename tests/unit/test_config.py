"""Settings: production refuses weak secrets; lists come from comma-separated variables; the
per-service settings are bounded and checked by the start-up preflight."""

import pytest
from pydantic import ValidationError

from finq_core.config import (
    EXAMPLE_SECRET,
    ApiServerSettings,
    Settings,
    WorkerMetricsSettings,
    preflight,
)


@pytest.mark.parametrize("secret", ["", "short", EXAMPLE_SECRET])
def test_production_refuses_a_weak_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="APP_SECRET_KEY"):
        Settings(app_env="production", app_secret_key=secret)


def test_production_accepts_a_long_random_secret() -> None:
    s = Settings(app_env="production", app_secret_key="x" * 48)
    assert s.app_env == "production"


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
