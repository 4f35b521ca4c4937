"""`.env.example` documents every variable the code reads, and nothing it does not."""

import re
from pathlib import Path

from finq_core.config import SETTINGS_CLASSES, Settings

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = [ROOT / "lib", ROOT / "fastapi-app", ROOT / "celery-worker"]
# The command-line client runs on a user's machine, not in the services: its FINQ_URL,
# FINQ_TOKEN, FINQ_CONFIG and FINQ_PASSWORD are documented with it (README, finq --help).
CLIENT_PACKAGE = ROOT / "lib" / "finq_cli"


def service_sources() -> list[Path]:
    return [
        path
        for package in SERVICE_PACKAGES
        for path in package.rglob("*.py")
        if CLIENT_PACKAGE not in path.parents
    ]


# prometheus_client reads it itself; finq_core.metrics only asks whether it is set.
READ_BY_A_LIBRARY = {"PROMETHEUS_MULTIPROC_DIR"}


def example_keys() -> set[str]:
    keys = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
        if m:
            keys.add(m.group(1))
    return keys


def setting_keys() -> set[str]:
    """Variables read through the settings classes of finq_core.config."""
    return {name.upper() for cls in SETTINGS_CLASSES for name in cls.model_fields}


def infra_keys() -> set[str]:
    """Variables read outside the settings classes: by compose, the service script, the local
    stack, and by libraries (READ_BY_A_LIBRARY)."""
    found: set[str] = set()
    files = [
        ROOT / "docker-compose.yml",
        ROOT / "deploy" / "finq-service",
        ROOT / "scripts" / "localstack.py",
        *(ROOT / "scripts").glob("_localstack_*.py"),
        *service_sources(),
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
    "BASH_SOURCE",
    "WORKER_METRICS_ADDRESS",
    "PROMETHEUS_MULTIPROC_DIR",
    "TMPDIR",
}


def test_every_setting_is_documented() -> None:
    shared = {name.upper() for name in Settings.model_fields}
    missing = (shared | (setting_keys() - INTERNAL)) - example_keys()
    assert not missing, f"settings missing from .env.example: {sorted(missing)}"


def test_the_services_read_the_environment_only_through_settings() -> None:
    direct = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in service_sources()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\bos\.(environ|getenv)\b", line)
        and not any(name in line for name in READ_BY_A_LIBRARY)
        and "os.environ.update(" not in line  # a write (finq_core.threads), not a read
    ]
    assert not direct, "read these through finq_core.config instead:\n" + "\n".join(direct)


def test_every_exemption_is_read() -> None:
    stale = INTERNAL - setting_keys() - infra_keys()
    assert not stale, f"INTERNAL names that nothing reads any more: {sorted(stale)}"


def test_every_infrastructure_variable_is_documented() -> None:
    missing = infra_keys() - INTERNAL - example_keys()
    assert not missing, (
        f"variables read by compose/scripts but not in .env.example: {sorted(missing)}"
    )


def test_nothing_documented_is_unused() -> None:
    used = setting_keys() | infra_keys()
    unused = example_keys() - used
    assert not unused, f".env.example lists variables nothing reads: {sorted(unused)}"


def test_compose_passes_every_setting_to_the_services() -> None:
    """docker-compose.yml lists the services' environment explicitly (x-app-env, plus the
    API-only admin account): a setting missing there would silently keep its default."""
    text = (ROOT / "docker-compose.yml").read_text()
    passed = set(re.findall(r"^ +([A-Z][A-Z0-9_]*): ", text, flags=re.M))
    missing = {name.upper() for name in Settings.model_fields} - passed
    assert not missing, f"settings not passed to the services by compose: {sorted(missing)}"
