"""NAME_FILE: any setting may come from a file (Docker secrets), for every settings class,
from the environment or from `.env`; NAME and NAME_FILE together, or an unreadable file, stop
the start-up with a message naming the variable."""

from pathlib import Path

import pytest
from pydantic_settings import SettingsError

from finq_core.config import ApiServerSettings, Settings, preflight

SECRET = "s3cret-" + "x" * 40


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "app_secret_key"
    path.write_text(SECRET + "\n", encoding="utf-8")
    return path


def test_a_secret_is_read_from_the_file_its_file_variable_names(
    monkeypatch: pytest.MonkeyPatch, secret_file: Path
) -> None:
    monkeypatch.delenv("APP_SECRET_KEY", raising=False)
    monkeypatch.setenv("APP_SECRET_KEY_FILE", str(secret_file))
    monkeypatch.setenv("APP_ENV", "production")
    assert Settings().app_secret_key == SECRET  # the trailing newline is not part of it


def test_every_field_of_every_settings_class_accepts_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "url").write_text("redis://:pw@redis:6379/0", encoding="utf-8")
    (tmp_path / "workers").write_text("3\n", encoding="utf-8")
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("GUNICORN_WORKERS", raising=False)
    monkeypatch.setenv("REDIS_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("GUNICORN_WORKERS_FILE", str(tmp_path / "workers"))
    assert Settings().redis_url == "redis://:pw@redis:6379/0"
    assert ApiServerSettings().gunicorn_workers == 3  # validated like the plain variable


def test_a_file_variable_in_the_env_file_is_read_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secret_file: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APP_SECRET_KEY", raising=False)
    monkeypatch.delenv("APP_SECRET_KEY_FILE", raising=False)
    (tmp_path / ".env").write_text(f"APP_SECRET_KEY_FILE={secret_file}\n", encoding="utf-8")
    assert Settings().app_secret_key == SECRET


def test_the_environment_file_variable_wins_over_the_env_file_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secret_file: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APP_SECRET_KEY", raising=False)
    (tmp_path / ".env").write_text("APP_SECRET_KEY=from-the-env-file\n", encoding="utf-8")
    monkeypatch.setenv("APP_SECRET_KEY_FILE", str(secret_file))
    assert Settings().app_secret_key == SECRET


def test_a_value_and_its_file_variable_together_are_refused(
    monkeypatch: pytest.MonkeyPatch, secret_file: Path
) -> None:
    monkeypatch.setenv("APP_SECRET_KEY", "y" * 48)
    monkeypatch.setenv("APP_SECRET_KEY_FILE", str(secret_file))
    with pytest.raises(SettingsError, match="APP_SECRET_KEY and APP_SECRET_KEY_FILE"):
        Settings()


def test_an_unreadable_file_stops_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "missing"))
    assert preflight() == 2
    err = capsys.readouterr().err
    assert "refusing to start: DATABASE_URL_FILE: cannot read" in err
    assert "Traceback" not in err


def test_an_empty_file_variable_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("LOG_LEVEL_FILE", "")
    assert Settings().log_level == "DEBUG"
