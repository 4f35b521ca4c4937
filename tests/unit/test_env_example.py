"""`.env.example` documents every variable the code reads, and nothing it does not."""

import re
from pathlib import Path

from finq_core.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def example_keys() -> set[str]:
    keys = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
        if m:
            keys.add(m.group(1))
    return keys


def infra_keys() -> set[str]:
    """Variables read outside Settings: by compose, the service script and the local stack."""
    found: set[str] = set()
    files = [
        ROOT / "docker-compose.yml",
        ROOT / "deploy" / "finq-service",
        ROOT / "scripts" / "localstack.py",
        *(ROOT / "scripts").glob("_localstack_*.py"),
        ROOT / "fastapi-app" / "gunicorn.conf.py",
        *(ROOT / "fastapi-app").rglob("*.py"),
        *(ROOT / "celery-worker").rglob("*.py"),
        *(ROOT / "lib").rglob("*.py"),
    ]
    for path in files:
        if path.exists():
            text = path.read_text()
            found |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
            found |= set(re.findall(r"environ(?:\.get\(|\[)\s*\"([A-Z][A-Z0-9_]*)\"", text))
            found |= set(re.findall(r"env\.get\(\"([A-Z][A-Z0-9_]*)\"", text))
    return found


# Read by the code but deliberately not for users to set (set per process by the launchers).
INTERNAL = {
    "API_BIND",
    "API_NAME",
    "WORKER_NAME",
    "FLOWER_ADDRESS",
    "FLOWER_URL_PREFIX",
    "RUN_DIR",
    "GUNICORN_KEEPALIVE",
    "GUNICORN_TIMEOUT",
    "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_MAX_REQUESTS",
    "FORWARDED_ALLOW_IPS",
    "PATH",
    "HOSTNAME",
    "HOME",
    "BASH_SOURCE",
    "WORKER_METRICS_ADDRESS",
    "PROMETHEUS_MULTIPROC_DIR",
    "TMPDIR",
}


def test_every_setting_is_documented() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    missing = settings - example_keys()
    assert not missing, f"settings missing from .env.example: {sorted(missing)}"


def test_every_infrastructure_variable_is_documented() -> None:
    missing = infra_keys() - INTERNAL - example_keys()
    assert not missing, (
        f"variables read by compose/scripts but not in .env.example: {sorted(missing)}"
    )


def test_nothing_documented_is_unused() -> None:
    used = {name.upper() for name in Settings.model_fields} | infra_keys()
    unused = example_keys() - used
    assert not unused, f".env.example lists variables nothing reads: {sorted(unused)}"


def test_compose_passes_every_setting_to_the_services() -> None:
    """docker-compose.yml lists the services' environment explicitly (x-app-env, plus the
    API-only admin account): a setting missing there would silently keep its default."""
    text = (ROOT / "docker-compose.yml").read_text()
    passed = set(re.findall(r"^ +([A-Z][A-Z0-9_]*): ", text, flags=re.M))
    missing = {name.upper() for name in Settings.model_fields} - passed
    assert not missing, f"settings not passed to the services by compose: {sorted(missing)}"
