"""deploy/swarm/stack.yml is docker-compose.yml for `docker stack deploy`: the same services
(compose's optional profiles aside), commands and settings, with what Swarm needs instead of
what it ignores: images from the registry, `deploy:` policies, secrets as NAME_FILE files,
the stateful services pinned to the data node, dnsrr and nginx resolving tasks.<service>."""

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
STACK = yaml.safe_load((ROOT / "deploy" / "swarm" / "stack.yml").read_text())
SERVICES = sorted(n for n, s in COMPOSE["services"].items() if "profiles" not in s)
APP_SERVICES = [
    n for n in SERVICES if str(COMPOSE["services"][n].get("image", "")).startswith("finq/")
]
PINNED = ["postgres", "redis", "celery-beat"]
# Compose variables the stack gives another way, and why.
NOT_IN_STACK = {
    ("redis", "REDISCLI_AUTH"): "the health check reads the password's secret file itself",
}
# Variables only the stack sets, and why.
ONLY_IN_STACK = {
    ("nginx", "PRUNE_DELAY"): "a vanished task's address times out instead of refusing",
}


def stack_service(name: str) -> dict[str, Any]:
    return dict(STACK["services"][name])


def test_the_stack_has_exactly_the_compose_services() -> None:
    assert sorted(STACK["services"]) == SERVICES


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_runs_the_same_command_and_entrypoint(name: str) -> None:
    compose, stack = COMPOSE["services"][name], stack_service(name)
    assert stack.get("entrypoint") == compose.get("entrypoint")
    if name == "redis":  # the same flags in order, the password read from its secret file
        script = stack["command"][-1].split()
        flags = [f for f in compose["command"] if not f.startswith("${REDIS_PASSWORD")]
        assert stack["command"][:2] == ["sh", "-c"] and script[0] == "exec"
        assert script[1 : len(flags) + 1] == flags
        assert script[len(flags) + 1 :] == ['"$$(cat', '/run/secrets/redis_password)"']
    else:
        assert stack.get("command") == compose.get("command")


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_reads_the_same_variables_secrets_as_files(name: str) -> None:
    compose_env = set(COMPOSE["services"][name].get("environment", {}))
    stack_env = set(stack_service(name).get("environment", {}))
    for variable in sorted(compose_env):
        if (name, variable) in NOT_IN_STACK:
            assert variable not in stack_env
            continue
        assert variable in stack_env or f"{variable}_FILE" in stack_env, (
            f"{name}: {variable} is in docker-compose.yml but not in the stack"
        )
    extra = {v for v in stack_env if (name, v) not in ONLY_IN_STACK} & {
        v for v in stack_env if v not in compose_env and v.removesuffix("_FILE") not in compose_env
    }
    assert not extra, f"{name}: variables only the stack sets: {sorted(extra)}"


@pytest.mark.parametrize("name", SERVICES)
def test_every_file_variable_points_at_a_secret_the_service_mounts(name: str) -> None:
    service = stack_service(name)
    mounted = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
    for variable, value in service.get("environment", {}).items():
        if variable.endswith("_FILE") and str(value).startswith("/run/secrets/"):
            secret = str(value).removeprefix("/run/secrets/")
            assert secret in mounted, f"{name}: {variable} names {secret}, not mounted"
            assert secret in STACK["secrets"]
    for secret in mounted:
        assert STACK["secrets"][secret].get("external") is True  # `docker secret create`


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_an_image_and_the_policies_swarm_needs(name: str) -> None:
    service = stack_service(name)
    assert service.get("image")
    deploy = service["deploy"]
    assert deploy["endpoint_mode"] == "dnsrr"  # no IPVS needed
    assert "restart_policy" in deploy
    assert "limits" in deploy["resources"]
    assert isinstance(deploy["replicas"], int)
    if name != "migrate":
        assert "update_config" in deploy
    assert service.get("healthcheck") == COMPOSE["services"][name].get("healthcheck") or (
        name == "redis"
    )
    for ignored in ("build", "container_name", "restart", "depends_on", "profiles"):
        assert ignored not in service, f"{name}: {ignored} means nothing to docker stack deploy"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_app_images_are_pulled_from_the_registry(name: str) -> None:
    compose_image = COMPOSE["services"][name]["image"]
    assert stack_service(name)["image"].startswith("${FINQ_REGISTRY:?")
    assert stack_service(name)["image"].endswith("/" + compose_image)


@pytest.mark.parametrize("name", PINNED)
def test_stateful_services_and_the_beat_run_once_on_the_data_node(name: str) -> None:
    deploy = stack_service(name)["deploy"]
    assert deploy["replicas"] == 1
    assert deploy["placement"]["constraints"] == ["node.labels.finq.data == true"]
    assert deploy["update_config"]["order"] == "stop-first"  # never two at once


def test_the_api_rolls_start_first() -> None:
    update = stack_service("fastapi-app")["deploy"]["update_config"]
    assert update["order"] == "start-first" and update["failure_action"] == "rollback"


def test_nginx_reaches_every_task_and_publishes_on_its_node() -> None:
    nginx = stack_service("nginx")
    assert nginx["environment"]["API_SERVICE"] == "tasks.fastapi-app:8000"
    assert nginx["environment"]["FLOWER_UPSTREAM"] == "tasks.flower:5555"
    assert [p["mode"] for p in nginx["ports"]] == ["host"]
    mounted = {c["target"].rsplit("/", 1)[-1] for c in nginx["configs"]}
    # Every file the entrypoint reads (the local stack's main configuration aside).
    assert mounted == {
        p.name
        for p in (ROOT / "nginx").iterdir()
        if p.suffix in {".sh", ".template"} and p.name != "nginx.local.conf.template"
    }
    assert mounted >= {"docker-entrypoint.sh", "finq.conf.template"}
    for config in STACK["configs"].values():
        assert (ROOT / "deploy" / "swarm" / config["file"]).resolve().is_file()


def test_the_volumes_are_the_compose_ones_the_stack_uses() -> None:
    used = {v.split(":", 1)[0] for s in STACK["services"].values() for v in s.get("volumes", [])}
    assert used == set(STACK["volumes"]) and used <= set(COMPOSE["volumes"])
