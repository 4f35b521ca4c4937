"""What a new operator meets with compose: nginx on loopback unless HTTP_BIND says otherwise,
no start with `.env.example`'s empty secrets nor with a placeholder, `make user` against the
compose database, and the `loadtest` profile's Locust image running against nginx.

The compose command of this project comes from scripts/test-compose.sh (FINQ_COMPOSE_CMD);
every container started here is a one-off `run --rm` of this project. This file runs before
test_compose_stack.py, whose last test kills an API replica."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = shlex.split(os.environ.get("FINQ_COMPOSE_CMD", ""))
    assert command, "FINQ_COMPOSE_CMD is not set (scripts/test-compose.sh sets it)"
    return command


def run(
    command: list[str],
    timeout: float = 300,
    cwd: Path | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        input=stdin,
        env=env,
        check=False,
    )


def option(command: list[str], name: str, value: str) -> list[str]:
    """`command` with the value of one option (e.g. --env-file) replaced."""
    at = command.index(name)
    return [*command[: at + 1], value, *command[at + 2 :]]


def test_nginx_is_published_on_loopback_by_default(project: str) -> None:
    """The test's env file sets no HTTP_BIND: compose's default applies."""
    out = run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--filter",
            "label=com.docker.compose.service=nginx",
        ]
    )
    (container,) = out.stdout.split()
    bindings = run(["docker", "port", container, "80/tcp"]).stdout.split()
    assert bindings and all(b.startswith("127.0.0.1:") for b in bindings), bindings


def test_the_example_env_file_does_not_start_until_the_secrets_are_set(
    compose: list[str],
) -> None:
    example = option(compose, "--env-file", str(ROOT / ".env.example"))
    # Only the file speaks: the test script exported its own env file's secrets, which compose
    # would otherwise prefer.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST")}
    config = run([*option(example, "-p", "finqexample"), "config"], 60, env=env)
    assert config.returncode != 0, "compose accepted .env.example as it is"
    assert "must be set" in config.stderr, config.stderr[-2000:]


@pytest.mark.parametrize(
    ("variable", "placeholder"),
    [
        ("APP_SECRET_KEY", "change-me-to-a-long-random-string"),
        ("ADMIN_PASSWORD", "change-me-admin-password"),
    ],
)
def test_a_container_refuses_to_start_with_a_placeholder_secret(
    compose: list[str], variable: str, placeholder: str
) -> None:
    refused = run(
        [
            *compose,
            "run",
            "--rm",
            "--no-deps",
            "-T",
            "-e",
            f"{variable}={placeholder}",
            "fastapi-app",
            "api",
        ],
        120,
    )
    assert refused.returncode == 2, refused.stdout[-1000:] + refused.stderr[-1000:]
    assert f"refusing to start: {variable}:" in refused.stdout + refused.stderr


def test_make_user_creates_an_account_in_the_compose_database(
    compose: list[str], base_url: str
) -> None:
    name, password = f"op{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    made = run(
        ["make", "--no-print-directory", "user", f"NAME={name}", f"COMPOSE={shlex.join(compose)}"],
        300,
        cwd=ROOT,
        stdin=password + "\n",
    )
    assert made.returncode == 0, made.stdout[-1500:] + made.stderr[-1500:]
    assert f"user '{name}' (user) saved" in made.stdout
    token = httpx.post(
        f"{base_url}/api/v1/auth/token", data={"username": name, "password": password}, timeout=15
    )
    assert token.status_code == 200, token.text[:300]


def test_the_locust_image_runs_a_headless_test_against_nginx(compose: list[str]) -> None:
    """The `loadtest` profile's image (built by compose from loadtest/Dockerfile) loads the
    locustfile, logs in with the admin account and follows tasks through nginx for 60 s: it
    exits 0 only when tasks completed and none failed or got lost."""
    ran = run(
        [
            *compose,
            "--profile",
            "loadtest",
            "run",
            "--rm",
            "--no-deps",
            "-T",
            # The admin account alone: no throwaway accounts to create first.
            "-e",
            "LOADTEST_ACCOUNTS=0",
            "locust",
            "--host",
            "http://nginx:80",
            "--headless",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            # Long enough for a few tasks on a loaded host (a login took 4.8 s at load 64;
            # gevent counts this limit from a clock read while locust was importing).
            "60s",
            "--stop-timeout",
            "60",
            "--finq-types",
            "loan_amortization",
            "--finq-mix-scale",
            "1",
            "--only-summary",
        ],
        300,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-3000:]
    assert "0 failed, 0 lost" in output, output[-3000:]
