"""The Helm chart (deploy/helm/finq), checked without a cluster: Helm's own engine (the Helm v4
SDK that helm-python-sdk bundles) renders it with several value sets, every manifest is
validated against the Kubernetes API schemas of a current release (kubernetes-validate,
strict: unknown fields refused), KEDA's resources against KEDA's CRD schemas (vendored in
tests/deploy/keda), and the rendered objects say what docs/deployment.md promises."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celery
import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from finq_core.broker import make_celery, queue_keys
from finq_core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "finq"
KEDA_CRDS = Path(__file__).parent / "keda"
KUBERNETES = "1.37.0"  # the newest release kubernetes-validate carries schemas for
OLDEST = "1.27.0"  # Chart.yaml's kubeVersion floor

SECRETS = {
    "appSecretKey": "k" * 48,
    "adminPassword": "admin-password",
    "flowerBasicAuth": "admin:flower-password",
    "databaseUrl": "postgresql+psycopg://finq:pw@postgres:5432/finq",
    "redisPassword": "redis-password",
}

# Value sets a user would install with, each rendered and validated whole.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {"secrets": SECRETS},
    "tls_at_nginx": {
        "secrets": SECRETS,
        "nginx": {"tls": {"secretName": "finq-tls"}, "service": {"type": "ClusterIP"}},
    },
    "ingress_in_front_of_nginx": {
        "secrets": {**SECRETS, "webhookSecret": "w" * 40},
        "ingress": {"enabled": True, "className": "nginx", "tls": {"secretName": "finq-tls"}},
    },
    "ingress_without_nginx": {
        "secrets": SECRETS,
        "nginx": {"enabled": False},
        "ingress": {"enabled": True, "host": "finq.internal"},
    },
    "existing_secret_fixed_replicas": {
        "secrets": {"existingSecret": "finq-managed"},
        "api": {"autoscaling": {"enabled": False}, "replicas": 3},
        "workers": {"autoscaling": {"enabled": False}, "replicas": 4},
        "flower": {"enabled": False},
    },
    "workers_scale_to_zero_high_only": {
        "secrets": SECRETS,
        "workers": {
            "queues": "high",
            "autoscaling": {"minReplicas": 0, "activationListLength": 2, "listLength": 4},
        },
        "api": {"priorityClassName": "finq-serving"},
    },
}


def render(values: dict[str, Any], *, upgrade: bool = False) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(
            values, name="finq", namespace="finq", is_install=not upgrade, is_upgrade=upgrade
        )
    docs = [doc for text in files.values() for doc in yaml.safe_load_all(text) if doc]
    return docs


@cache
def rendered(name: str) -> list[dict[str, Any]]:
    return render(copy.deepcopy(VALUE_SETS[name]))


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) of every workload."""
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            pod = d["spec"]["template"]["spec"]
            for c in pod["containers"]:
                yield pod, c


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@cache
def keda_schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((KEDA_CRDS / f"keda.sh_{plural}.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


KEDA_PLURALS = {"ScaledObject": "scaledobjects", "TriggerAuthentication": "triggerauthentications"}


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_rendered_manifest_is_valid_for_kubernetes_1_37_and_1_27_and_for_keda(
    value_set: str,
) -> None:
    docs = rendered(value_set)
    assert docs
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, keda_schema(KEDA_PLURALS[doc["kind"]]))
        else:
            for version in (KUBERNETES, OLDEST):
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    pytest.fail(f"{value_set}: {where} ({version}): {e.message} at {list(e.path)}")


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_the_chart_lints_clean_with_each_value_set(value_set: str) -> None:
    report = helm.lint(
        str(CHART), copy.deepcopy(VALUE_SETS[value_set]), strict=True, kube_version="v1.37.0"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_an_upgrade_renders_the_same_resources_as_an_install() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in rendered("defaults"))
    upgraded = render(copy.deepcopy(VALUE_SETS["defaults"]), upgrade=True)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in upgraded) == kinds


def test_a_missing_secret_fails_the_render_naming_the_value() -> None:
    values = {"secrets": {k: v for k, v in SECRETS.items() if k != "databaseUrl"}}
    with pytest.raises(helm.HelmError, match=r"secrets\.databaseUrl is required"):
        render(values)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"workers": {"autoscaling": {"listLength": 0}}}, "listLength"),
        ({"workers": {"queues": "high, low"}}, "queues"),
        ({"nginx": {"ratePerIp": "fast"}}, "ratePerIp"),
        ({"api": {"replica": 3}}, "replica"),
    ],
)
def test_a_value_outside_the_chart_schema_is_refused_naming_it(
    override: dict[str, Any], field: str
) -> None:
    with pytest.raises(helm.HelmError, match=field):
        render({"secrets": SECRETS, **override})


def test_the_scaled_object_counts_every_redis_list_of_every_worker_queue() -> None:
    docs = rendered("defaults")
    (so,) = of_kind(docs, "ScaledObject")
    worker = named(docs, "Deployment", "finq-worker")
    queues = env_of(worker["spec"]["template"]["spec"]["containers"][0])["WORKER_QUEUES"]
    triggers = so["spec"]["triggers"]
    # Celery's list names as finq_core.broker reads them: each queue and kombu's priority lists.
    assert [t["metadata"]["listName"] for t in triggers] == [
        key for queue in queues.split(",") for key in queue_keys(queue)
    ]
    assert {t["type"] for t in triggers} == {"redis"}
    assert {t["metadata"]["listLength"] for t in triggers} == {"8"}
    assert {t["metadata"]["activationListLength"] for t in triggers} == {"0"}
    assert {t["metadata"]["address"] for t in triggers} == {"redis:6379"}
    # The formula adds every list: the target is waiting messages per worker pod.
    modifiers = so["spec"]["advanced"]["scalingModifiers"]
    assert modifiers["formula"].split(" + ") == [t["name"] for t in triggers]
    assert (modifiers["target"], modifiers["metricType"]) == ("8", "AverageValue")
    assert so["spec"]["scaleTargetRef"]["name"] == "finq-worker"
    assert "replicas" not in worker["spec"]  # KEDA's HPA owns the count


def test_keda_reads_the_redis_password_from_the_secret() -> None:
    docs = rendered("defaults")
    (auth,) = of_kind(docs, "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "finq-secrets", "key": "REDIS_PASSWORD"}
    ]
    (so,) = of_kind(docs, "ScaledObject")
    assert {t["authenticationRef"]["name"] for t in so["spec"]["triggers"]} == {
        auth["metadata"]["name"]
    }
    assert "REDIS_PASSWORD" in named(docs, "Secret", "finq-secrets")["stringData"]


def test_a_worker_queue_list_and_activation_follow_the_values() -> None:
    (so,) = of_kind(rendered("workers_scale_to_zero_high_only"), "ScaledObject")
    assert [t["metadata"]["listName"] for t in so["spec"]["triggers"]] == queue_keys("high")
    assert so["spec"]["minReplicaCount"] == 0
    assert so["spec"]["advanced"]["scalingModifiers"]["activationTarget"] == "2"
    assert {t["metadata"]["activationListLength"] for t in so["spec"]["triggers"]} == {"2"}


def test_workers_stop_by_soft_shutdown_within_their_grace_period() -> None:
    assert tuple(int(p) for p in celery.__version__.split(".")[:2]) >= (5, 5)
    docs = rendered("defaults")
    pod = named(docs, "Deployment", "finq-worker")["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert env["REMAP_SIGTERM"] == "SIGQUIT"
    settings = Settings(default_task_timeout=int(env["DEFAULT_TASK_TIMEOUT"]))
    soft = make_celery(settings).conf.worker_soft_shutdown_timeout
    assert pod["terminationGracePeriodSeconds"] > soft + 10, (soft, pod)


def test_the_api_scales_on_cpu_and_probes_readiness_and_liveness_apart() -> None:
    docs = rendered("defaults")
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "finq-api"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    api = named(docs, "Deployment", "finq-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    fixed = rendered("existing_secret_fixed_replicas")
    assert not of_kind(fixed, "HorizontalPodAutoscaler")
    assert not of_kind(fixed, "ScaledObject")
    assert named(fixed, "Deployment", "finq-api")["spec"]["replicas"] == 3
    assert named(fixed, "Deployment", "finq-worker")["spec"]["replicas"] == 4


def test_the_beat_runs_alone_and_is_replaced_not_rolled() -> None:
    beat = named(rendered("defaults"), "Deployment", "finq-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}


def test_the_migration_runs_as_a_hook_after_the_secret_it_reads() -> None:
    docs = rendered("defaults")
    (job,) = of_kind(docs, "Job")
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    secret = named(docs, "Secret", "finq-secrets")["metadata"]["annotations"]
    assert secret["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["helm.sh/hook-weight"]) < int(hooks["helm.sh/hook-weight"])
    # A Secret the user manages exists before the release: the chart makes none.
    assert not of_kind(rendered("existing_secret_fixed_replicas"), "Secret")


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_container_runs_unprivileged_on_a_read_only_root(value_set: str) -> None:
    for pod, c in containers(rendered(value_set)):
        # The fields the "restricted" Pod Security Standard asks of a pod and its containers.
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        ctx = c["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        writable = [m for m in c["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
        assert "/tmp" in {m["mountPath"] for m in writable}
        assert "memory" in c["resources"]["limits"], c["name"]


def test_disruption_budgets_cover_the_api_the_workers_and_nginx() -> None:
    budgets = {p["metadata"]["name"] for p in of_kind(rendered("defaults"), "PodDisruptionBudget")}
    assert budgets == {"finq-api", "finq-worker", "finq-nginx"}


def test_the_api_outweighs_the_workers_for_cpu_and_is_never_throttled() -> None:
    docs = rendered("defaults")

    def resources(name: str) -> dict[str, Any]:
        pod = named(docs, "Deployment", name)["spec"]["template"]["spec"]
        res: dict[str, Any] = pod["containers"][0]["resources"]
        return res

    def cores(quantity: str) -> float:
        return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)

    api, worker = resources("finq-api"), resources("finq-worker")
    assert cores(api["requests"]["cpu"]) > cores(worker["requests"]["cpu"])
    assert "cpu" not in api["limits"]
    assert "cpu" in worker["limits"]


def test_nginx_runs_the_repository_templates_and_terminates_tls_from_a_secret() -> None:
    docs = rendered("tls_at_nginx")
    config = named(docs, "ConfigMap", "finq-nginx")["data"]
    for name, text in config.items():
        assert text == (ROOT / "nginx" / name).read_text().rstrip("\n"), name
    pod = named(docs, "Deployment", "finq-nginx")["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert (env["TLS_CERT_FILE"], env["TLS_KEY_FILE"]) == (
        "/etc/finq-tls/tls.crt",
        "/etc/finq-tls/tls.key",
    )
    assert {"secret": {"secretName": "finq-tls"}, "name": "tls"} in pod["volumes"]
    ports = named(docs, "Service", "finq-nginx")["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in ports] == [("http", 80), ("https", 443)]
    plain = named(rendered("defaults"), "Deployment", "finq-nginx")
    assert "TLS_CERT_FILE" not in env_of(plain["spec"]["template"]["spec"]["containers"][0])


def test_an_ingress_routes_to_nginx_or_straight_to_the_api_and_flower() -> None:
    (front,) = of_kind(rendered("ingress_in_front_of_nginx"), "Ingress")
    paths = front["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == [("/", "finq-nginx")]
    assert front["spec"]["tls"] == [{"hosts": ["finq.example.com"], "secretName": "finq-tls"}]
    docs = rendered("ingress_without_nginx")
    (alone,) = of_kind(docs, "Ingress")
    paths = alone["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == [
        ("/flower/", "finq-flower"),
        ("/", "finq-api"),
    ]
    assert not [d for d in docs if d["metadata"]["name"] == "finq-nginx"]


def test_the_api_processes_get_their_bound_on_requests_in_progress() -> None:
    def bound(docs: list[dict[str, Any]]) -> str:
        pod = named(docs, "Deployment", "finq-api")["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        return str(env["API_MAX_IN_FLIGHT"])

    assert bound(rendered("defaults")) == "64"
    values = copy.deepcopy(VALUE_SETS["defaults"])
    values["api"] = {**values.get("api", {}), "maxInFlight": 8}
    assert bound(render(values)) == "8"
