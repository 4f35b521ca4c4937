"""Settings: production refuses weak secrets; lists come from comma-separated variables."""

import pytest
from pydantic import ValidationError

from finq_core.config import EXAMPLE_SECRET, Settings


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
