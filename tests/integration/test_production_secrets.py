"""A new operator's `cp .env.example .env` cannot reach production with a placeholder secret:
every process starts through deploy/finq-service, which runs `python -m finq_core.config`
first; with APP_ENV=production it exits 2 naming each weak secret, before any service runs."""

import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "deploy" / "finq-service"
VENV_BIN = Path(sys.executable).parent


def strong() -> str:
    return secrets.token_urlsafe(32)


def good_environment() -> dict[str, str]:
    """What compose passes with real secrets (the URLs carry the two store passwords)."""
    return {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "APP_ENV": "production",
        "APP_SECRET_KEY": strong(),
        "ADMIN_USERNAME": "admin",
        "ADMIN_PASSWORD": strong(),
        "DATABASE_URL": f"postgresql+psycopg://finq:{strong()}@127.0.0.1:9/finq",
        "REDIS_URL": f"redis://:{strong()}@127.0.0.1:9/0",
        "FLOWER_BASIC_AUTH": f"flower:{strong()}",
        "WEBHOOK_SECRET": strong(),
    }


def start(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # cwd: an empty folder, so that no .env file is read.
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


# The values .env.example used to ship, the well-known defaults, and short or repetitive ones;
# with the variable the refusal must name.
WEAK = [
    ("APP_SECRET_KEY", "change-me-to-a-long-random-string", "APP_SECRET_KEY"),
    ("APP_SECRET_KEY", "k" * 64, "APP_SECRET_KEY"),
    ("ADMIN_PASSWORD", "change-me-admin-password", "ADMIN_PASSWORD"),
    ("ADMIN_PASSWORD", "admin", "ADMIN_PASSWORD"),
    ("ADMIN_PASSWORD", "short-pass12", "ADMIN_PASSWORD"),
    (
        "DATABASE_URL",
        "postgresql+psycopg://finq:change-me-postgres-password@postgres:5432/finq",
        "POSTGRES_PASSWORD",
    ),
    ("DATABASE_URL", "postgresql+psycopg://finq:postgres@postgres:5432/finq", "POSTGRES_PASSWORD"),
    ("REDIS_URL", "redis://:change-me-redis-password@redis:6379/0", "REDIS_PASSWORD"),
    ("FLOWER_BASIC_AUTH", "admin:change-me-flower-password", "FLOWER_BASIC_AUTH"),
    ("FLOWER_BASIC_AUTH", "admin:flower", "FLOWER_BASIC_AUTH"),
    ("WEBHOOK_SECRET", "too-short-a-key", "WEBHOOK_SECRET"),
    ("SMTP_PASSWORD", "change-me", "SMTP_PASSWORD"),
]


@pytest.mark.parametrize(("variable", "value", "named"), WEAK)
@pytest.mark.parametrize("role", ["api", "worker", "flower"])
def test_production_refuses_to_start_with_a_weak_secret(
    tmp_path: Path, role: str, variable: str, value: str, named: str
) -> None:
    refused = start([str(SERVICE), role], {**good_environment(), variable: value}, tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert f"refusing to start: {variable}:" in refused.stderr, refused.stderr
    assert named in refused.stderr
    secret = value.rpartition(":")[2].partition("@")[0]
    assert secret not in refused.stderr, "the refusal does not print the secret"


def test_every_weak_secret_is_named_at_once(tmp_path: Path) -> None:
    """The old `.env.example` in production: one run lists all five secrets."""
    env = {
        **good_environment(),
        "APP_SECRET_KEY": "change-me-to-a-long-random-string",
        "ADMIN_PASSWORD": "change-me-admin-password",
        "DATABASE_URL": "postgresql+psycopg://finq:change-me-postgres-password@pg/finq",
        "REDIS_URL": "redis://:change-me-redis-password@redis:6379/0",
        "FLOWER_BASIC_AUTH": "admin:change-me-flower-password",
    }
    refused = start([sys.executable, "-m", "finq_core.config"], env, tmp_path)
    assert refused.returncode == 2
    lines = [line for line in refused.stderr.splitlines() if "refusing to start" in line]
    named = {line.split(": ")[2] for line in lines}
    expected = {"APP_SECRET_KEY", "ADMIN_PASSWORD", "DATABASE_URL", "REDIS_URL"}
    assert named == expected | {"FLOWER_BASIC_AUTH"}, refused.stderr
    assert "POSTGRES_PASSWORD" in refused.stderr and "REDIS_PASSWORD" in refused.stderr


def test_production_starts_with_strong_secrets(tmp_path: Path) -> None:
    checked = start([sys.executable, "-m", "finq_core.config"], good_environment(), tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""


def test_development_accepts_the_placeholders(tmp_path: Path) -> None:
    env = {
        **good_environment(),
        "APP_ENV": "development",
        "APP_SECRET_KEY": "change-me-to-a-long-random-string",
        "ADMIN_PASSWORD": "change-me-admin-password",
        "FLOWER_BASIC_AUTH": "admin:change-me-flower-password",
    }
    checked = start([sys.executable, "-m", "finq_core.config"], env, tmp_path)
    assert checked.returncode == 0, checked.stderr
