"""`GET /api/v1/task-types` publishes what the engine registers: every type, its schema and an
example that the type's own model accepts (so the page's generated form starts valid)."""

import pytest
from fastapi.testclient import TestClient

from finq_api.main import create_app
from finq_engine import TASK_TYPES


@pytest.fixture(scope="module")
def published() -> dict[str, dict[str, object]]:
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        resp = c.get("/api/v1/task-types")
    assert resp.status_code == 200
    return {t["name"]: t for t in resp.json()}


def test_every_registered_type_is_published(published: dict[str, dict[str, object]]) -> None:
    assert set(published) == set(TASK_TYPES)


@pytest.mark.parametrize("name", ["implied_volatility", "american_option", "dated_bond_analytics"])
def test_new_types_carry_a_schema_an_example_and_a_description(
    published: dict[str, dict[str, object]], name: str
) -> None:
    if name not in TASK_TYPES:
        pytest.skip(f"{name} is not registered")
    entry = published[name]
    assert entry["params_schema"] == TASK_TYPES[name].json_schema()
    assert entry["example"] == TASK_TYPES[name].example
    assert entry["description"]
    TASK_TYPES[name].parse(entry["example"])
