"""`.env.example` documents every variable the code reads, and nothing it does not; every
variable the services and their launcher script read is a setting of finq_core.config."""

import re
from pathlib import Path
from typing import Any, get_args

from pydantic_core import PydanticUndefined

from finq_core.broker import ALL_QUEUES
from finq_core.config import SETTINGS_CLASSES, QueueName, Settings

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = [ROOT / "lib", ROOT / "fastapi-app", ROOT / "celery-worker"]
# The shell scripts every service process runs through, in compose and the local stack alike.
SERVICE_SCRIPTS = [
    ROOT / "deploy" / "finq-service",
    ROOT / "deploy" / "docker" / "finq-healthcheck",
]
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
# Bash's own and the system's, not finq's.
READ_FROM_THE_SYSTEM = {"BASH_SOURCE", "TMPDIR", "PATH", "HOME"}


def example_keys(*, commented: bool = False) -> set[str]:
    """Variables set in .env.example; with `commented`, also the `# NAME=` lines of the values
    the launchers set per process."""
    pattern = r"^(?:# )?([A-Z][A-Z0-9_]*)=" if commented else r"^([A-Z][A-Z0-9_]*)="
    keys = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(pattern, line)
        if m:
            keys.add(m.group(1))
    return keys


def shell_reads(path: Path) -> dict[str, str | None]:
    """Variables a shell script reads, with the default it gives (`${NAME:-default}`)."""
    found: dict[str, str | None] = {}
    for name, default in re.findall(r"\$\{([A-Z][A-Z0-9_]*)(?::-([^}]*))?", path.read_text()):
        if default or name not in found:
            found[name] = default or None
    return found


def default_of(name: str) -> Any:
    """The default of the settings field read from variable `name`."""
    for cls in SETTINGS_CLASSES:
        field = cls.model_fields.get(name.lower())
        if field is not None:
            if field.default is PydanticUndefined and field.default_factory is not None:
                return field.default_factory()  # type: ignore[call-arg]
            return field.default
    raise KeyError(name)


def setting_keys() -> set[str]:
    """Variables read through the settings classes of finq_core.config."""
    return {name.upper() for cls in SETTINGS_CLASSES for name in cls.model_fields}


def file_form_of_a_setting(name: str) -> bool:
    """NAME_FILE, which every setting NAME accepts (finq_core.config.FileVariables)."""
    return name.endswith("_FILE") and name.removesuffix("_FILE") in setting_keys()


def infra_keys() -> set[str]:
    """Variables read outside the settings classes: by compose, the service script, the local
    stack, and by libraries (READ_BY_A_LIBRARY)."""
    found: set[str] = set()
    files = [
        ROOT / "docker-compose.yml",
        ROOT / "deploy" / "swarm" / "stack.yml",
        *SERVICE_SCRIPTS,
        ROOT / "scripts" / "localstack.py",
        ROOT / "scripts" / "create_user.py",
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


# Read by the code but not the user's to set: the system's, a library's.
INTERNAL = READ_FROM_THE_SYSTEM | READ_BY_A_LIBRARY


def test_every_setting_is_documented() -> None:
    """The shared settings are set in .env.example; the per-process ones at least listed."""
    shared = {name.upper() for name in Settings.model_fields}
    assert not shared - example_keys(), (
        f"missing from .env.example: {sorted(shared - example_keys())}"
    )
    missing = setting_keys() - example_keys(commented=True)
    assert not missing, f"settings missing from .env.example: {sorted(missing)}"


def test_every_variable_the_service_scripts_read_is_a_setting() -> None:
    """deploy/finq-service and the health check read only what `python -m finq_core.config`
    has checked (or the system's), with the settings' own defaults."""
    problems = []
    for path in SERVICE_SCRIPTS:
        for name, default in shell_reads(path).items():
            if name in INTERNAL or file_form_of_a_setting(name):
                continue
            if name not in setting_keys():
                problems.append(f"{path.name}: {name} is not a setting")
            elif default is not None:
                value = default_of(name)
                expected = ",".join(value) if isinstance(value, list) else str(value).lower()
                if default.lower() != expected.lower():
                    problems.append(
                        f"{path.name}: {name} defaults to {default!r}, not {expected!r}"
                    )
    assert not problems, "\n".join(problems)


def test_the_worker_queue_setting_names_the_brokers_queues() -> None:
    assert set(get_args(QueueName)) == set(ALL_QUEUES)
    assert default_of("WORKER_QUEUES") == list(ALL_QUEUES)


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
    stale = INTERNAL - setting_keys() - infra_keys() - {"PATH", "HOME"}
    assert not stale, f"INTERNAL names that nothing reads any more: {sorted(stale)}"


def test_every_infrastructure_variable_is_documented() -> None:
    missing = {
        name
        for name in infra_keys() - INTERNAL - example_keys(commented=True)
        if not file_form_of_a_setting(name)
    }
    assert not missing, (
        f"variables read by compose/scripts but not in .env.example: {sorted(missing)}"
    )


def test_nothing_documented_is_unused() -> None:
    used = setting_keys() | infra_keys()
    unused = example_keys(commented=True) - used
    assert not unused, f".env.example lists variables nothing reads: {sorted(unused)}"


def test_compose_passes_every_setting_to_the_services() -> None:
    """docker-compose.yml lists the services' environment explicitly (x-app-env, plus the
    API-only admin account): a setting missing there would silently keep its default."""
    text = (ROOT / "docker-compose.yml").read_text()
    passed = set(re.findall(r"^ +([A-Z][A-Z0-9_]*): ", text, flags=re.M))
    missing = {name.upper() for name in Settings.model_fields} - passed
    assert not missing, f"settings not passed to the services by compose: {sorted(missing)}"
