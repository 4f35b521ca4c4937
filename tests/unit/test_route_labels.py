"""The HTTP metrics label a request with its route's full template, whatever the router's
own prefix: dashboards and alerts select on route="/api/v1/tasks"."""

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from finq_api import API_PREFIX
from finq_api.middleware import EdgeMiddleware
from finq_api.routes import health, task_types


def _count(method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("finq_http_requests_total", labels) or 0.0


def test_versioned_and_plain_routes_are_labelled_with_their_full_template() -> None:
    app = FastAPI()
    app.include_router(health.router)
    app.include_router(task_types.router, prefix=API_PREFIX)
    app.add_middleware(EdgeMiddleware, max_body=1024)
    client = TestClient(app)
    expected = [
        ("GET", f"{API_PREFIX}/task-types", "/api/v1/task-types", "200"),
        ("GET", "/health", "/health", "200"),
        ("GET", f"{API_PREFIX}/nothing-here", "unmatched", "404"),
    ]
    before = [_count(method, label, status) for method, _, label, status in expected]
    for method, path, _, status in expected:
        assert str(client.request(method, path).status_code) == status
    after = [_count(method, label, status) for method, _, label, status in expected]
    assert [b + 1 for b in before] == after
