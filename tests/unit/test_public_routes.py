"""docs/api.md names every route that answers without a token, and only those."""

import re
from pathlib import Path

from fastapi.testclient import TestClient

from finq_api.main import create_app

ROOT = Path(__file__).resolve().parents[2]
# Routes left out of the OpenAPI schema, none of which asks for a token.
HIDDEN = {"GET /docs", "GET /openapi.json", "GET /", "GET /static/...", "GET /metrics"}


def documented() -> set[str]:
    text = (ROOT / "docs" / "api.md").read_text()
    paragraph = text[text.index("Public routes, which need no token") :].split("\n\n")[0]
    return set(re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`]*)`", paragraph))


def test_the_documented_public_routes_are_the_apps() -> None:
    spec = create_app().openapi()
    public = {
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if not operation.get("security")
    }
    assert public, "the schema lists public routes"
    assert documented() == public | HIDDEN


def test_the_hidden_public_routes_answer_without_a_token() -> None:
    client = TestClient(create_app())  # no lifespan: no database, no Redis
    for route in sorted(HIDDEN - {"GET /static/..."}):
        path = route.split(" ", 1)[1]
        assert client.get(path).status_code == 200, route


def test_metrics_answer_every_scrape_not_only_the_first() -> None:
    client = TestClient(create_app())
    assert [client.get("/metrics").status_code for _ in range(3)] == [200, 200, 200]
