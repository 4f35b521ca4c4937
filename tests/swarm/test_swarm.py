"""The stack on a real three-node swarm (scripts/test-swarm.sh builds it): it converges, scales
under load, survives a worker node's death without losing or repeating a task, rolls the API
to a new image without failing a request, and spreads the workers again when the node is back.
The tests run in file order, each on the state the previous one left."""

import os
import time
from typing import Any

import httpx
import pytest

from tests.swarm.conftest import (
    STACK,
    Load,
    host_docker,
    record_timing,
    service_tasks,
    submit,
    swarm,
    wait_converged,
    wait_final,
)

# Each scenario waits on swarm convergence (deadlines of minutes), above pytest's 300 s default.
pytestmark = pytest.mark.timeout(600)
NODES = os.environ.get("FINQ_SWARM_NODES", "").split()
PREFIX = os.environ.get("FINQ_SWARM_PREFIX", "finq-swarm")
LOAN = {
    "type": "loan_amortization",
    "params": {"principal": 10000, "annual_rate": 0.05, "years": 30},
}
# About a second of one core: long enough to be caught running when its node dies.
PRICING = {
    "type": "monte_carlo_option",
    "params": {
        "spot": 100,
        "strike": 105,
        "maturity": 1,
        "rate": 0.03,
        "volatility": 0.2,
        "option_type": "call",
        "style": "asian_arithmetic",
        "paths": 60000,
        "steps": 252,
    },
}


def hostname(node_container: str) -> str:
    return node_container.removeprefix(PREFIX + "-")


def history(client: httpx.Client, headers: dict[str, str], task_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/tasks/{task_id}/history", headers=headers)
    assert resp.status_code == 200, resp.text[:300]
    return list(resp.json())


def test_1_every_service_converges_and_a_task_completes_through_nginx(
    client: httpx.Client, deployed: float, auth_headers: dict[str, str]
) -> None:
    record_timing("converge", deployed)
    assert client.get("/health/ready").status_code == 200
    task_id = submit(client, auth_headers, LOAN)
    task = wait_final(client, auth_headers, [task_id], 120)[task_id]
    assert task["status"] == "SUCCESS", task
    assert task["result"]
    nodes = swarm("node", "ls", "--format", "{{.Hostname}} {{.Status}}").split("\n")
    assert sorted(n for n in nodes if n) == sorted(f"{hostname(n)} Ready" for n in NODES)


def test_2_scaling_api_and_workers_from_three_to_six_under_load_fails_no_request(
    base_url: str, auth_headers: dict[str, str]
) -> None:
    started = time.monotonic()
    with Load(base_url, auth_headers) as load:
        swarm("service", "scale", "-d", f"{STACK}_fastapi-app=6", f"{STACK}_celery-worker=6")
        wait_converged(300)
        # nginx follows tasks.fastapi-app by itself: all six answer.
        deadline = time.monotonic() + 60
        replicas: set[str] = set()
        while len(replicas) < 6 and time.monotonic() < deadline:
            replicas |= load.recent_replicas(2)
        assert len(replicas) >= 6, f"nginx reached {len(replicas)} API replicas of 6"
        # And back to three: replicas leaving cost nothing either.
        swarm("service", "scale", "-d", f"{STACK}_fastapi-app=3")
        wait_converged(180)
        # Until nginx has dropped the three that left (PRUNE_DELAY, 5 s) and some more.
        time.sleep(10)
    record_timing("scale", time.monotonic() - started)
    assert load.sent > 100
    assert not load.failures, f"{len(load.failures)} of {load.sent} failed: {load.failures[:5]}"


def test_3_a_worker_node_killed_while_tasks_run_loses_and_repeats_no_task(
    client: httpx.Client, base_url: str, auth_headers: dict[str, str]
) -> None:
    started = time.monotonic()
    victim = NODES[1]
    # Its worker containers' ids are their Celery node names (worker@<container id>).
    on_victim = host_docker(
        "exec",
        victim,
        "docker",
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.swarm.service.name={STACK}_celery-worker",
    ).split()
    assert on_victim, f"no worker runs on {victim}"

    def victim_cpu() -> float:
        """The CPU its worker containers use now (percent of a core, summed): a pricing runs
        there while it is high. Read from the node's own engine: the API is slow under this
        load, and a pricing (about 0.5 s) may start and end between two polls of it."""
        out = host_docker(
            "exec", victim, "docker", "stats", "--no-stream", "--format", "{{.CPUPerc}}", *on_victim
        )
        return sum(float(v.strip().rstrip("%") or 0) for v in out.split())

    # Work for every worker process, topped up until the victim's workers are seen computing
    # (submitting is slower than 12 processes run these, so the queue must not run dry).
    ids: list[str] = []
    deadline = time.monotonic() + 120
    cpu = 0.0
    while True:
        ids += [submit(client, auth_headers, PRICING) for _ in range(24)]
        cpu = victim_cpu()
        if cpu >= 20:  # idle workers use 1-2%; a pricing shares the 2 cores with 11 others
            break
        assert time.monotonic() < deadline, f"{victim}'s workers never computed (CPU {cpu}%)"
    record_timing(f"victim-busy-cpu={cpu:.0f}%-after-{len(ids)}-tasks", 0)
    with Load(base_url, auth_headers, clients=2) as load:
        host_docker("kill", "--signal", "KILL", victim)
        killed_at = time.monotonic()
        down_deadline = killed_at + 60
        while f"{hostname(victim)} Down" not in swarm(
            "node", "ls", "--format", "{{.Hostname}} {{.Status}}"
        ):
            assert time.monotonic() < down_deadline, f"{victim} not marked Down within 60 s"
            time.sleep(1)
        down_at = time.monotonic()
        record_timing("node-down-detected", down_at - killed_at)
        tasks = wait_final(client, auth_headers, ids, 240)
        # The load goes on until it counts: its first requests may each wait out nginx's 20 s
        # read timeout on the dead node's replica, and the tasks may end before that.
        load_deadline = time.monotonic() + 90
        while load.sent < 20:
            assert time.monotonic() < load_deadline, f"{load.sent} requests in 90 s"
            time.sleep(0.5)
    record_timing("node-death", time.monotonic() - started)
    assert {t["status"] for t in tasks.values()} == {"SUCCESS"}, {
        i: t["status"] for i, t in tasks.items() if t["status"] != "SUCCESS"
    }
    for task_id in ids:
        successes = [e for e in history(client, auth_headers, task_id) if e["status"] == "SUCCESS"]
        assert len(successes) == 1, f"{task_id}: {len(successes)} SUCCESS events"
    # A request nginx had already sent to the dead node's API replica (or sends on a kept-alive
    # connection to it until the replica is dropped) gets no answer and no reset: nginx's 20 s
    # read timeout ends the wait and the GET goes to another replica. None may fail.
    record_timing(f"requests-slow={load.slow}-retried={load.retried}-of-{load.sent}", 0)
    assert not load.failures, f"{len(load.failures)} of {load.sent} failed: {load.failures[:5]}"


def test_4_rolling_the_api_to_a_new_image_tag_under_load_fails_no_request(
    base_url: str, auth_headers: dict[str, str]
) -> None:
    started = time.monotonic()
    tag = os.environ["FINQ_SWARM_IMAGE_TAG"]
    push, pull = os.environ["FINQ_SWARM_PUSH_REGISTRY"], os.environ["FINQ_SWARM_REGISTRY"]
    new_tag = f"{tag}-rolled-{int(time.time())}"
    host_docker("tag", f"finq/fastapi-app:{tag}", f"{push}/finq/fastapi-app:{new_tag}")
    host_docker("push", "-q", f"{push}/finq/fastapi-app:{new_tag}", timeout=300)
    new_image = f"{pull}/finq/fastapi-app:{new_tag}"
    with Load(base_url, auth_headers) as load:
        swarm(
            "service",
            "update",
            "--detach=false",
            "--quiet",
            "--image",
            new_image,
            f"{STACK}_fastapi-app",
            timeout=400,
        )
        wait_converged(120, only={"fastapi-app"})
        time.sleep(3)
    record_timing("rolling-update", time.monotonic() - started)
    images = {t["image"] for t in service_tasks("fastapi-app")}
    assert images == {new_image}
    assert load.sent > 100
    assert not load.failures, f"{len(load.failures)} of {load.sent} failed: {load.failures[:5]}"


def test_5_the_node_back_gets_workers_again(
    client: httpx.Client, auth_headers: dict[str, str]
) -> None:
    started = time.monotonic()
    victim = NODES[1]
    host_docker("start", victim)
    deadline = time.monotonic() + 120
    while f"{hostname(victim)} Ready" not in swarm(
        "node", "ls", "--format", "{{.Hostname}} {{.Status}}"
    ):
        assert time.monotonic() < deadline, f"{victim} did not rejoin within 120 s"
        time.sleep(1)
    # The workers that could not be placed while it was away (WORKER_MAX_PER_NODE=2 in the
    # test: 6 replicas fill 3 nodes) start on it now. Swarm moves no running task by itself;
    # `docker service update --force` would reschedule them all.
    wait_converged(300, only={"celery-worker", "fastapi-app"})
    nodes = {t["node"] for t in service_tasks("celery-worker")}
    assert nodes == {hostname(n) for n in NODES}, nodes
    task_id = submit(client, auth_headers, LOAN)
    assert wait_final(client, auth_headers, [task_id], 120)[task_id]["status"] == "SUCCESS"
    record_timing("node-back", time.monotonic() - started)
