"""The catalogue of task types with their JSON schemas and examples (from finq_engine)."""

from typing import Any

from fastapi import APIRouter

from finq_api.guard import GuardedRoute
from finq_api.schemas import TaskTypeOut
from finq_engine import TASK_TYPES

router = APIRouter(prefix="/task-types", tags=["tasks"], route_class=GuardedRoute)


def _out(name: str) -> TaskTypeOut:
    t = TASK_TYPES[name]
    return TaskTypeOut(
        name=t.name,
        title=t.title,
        description=(t.params_model.__doc__ or "").strip() or None,
        params_schema=t.json_schema(),
        example=t.example,
    )


@router.get("", response_model=list[TaskTypeOut])
def list_task_types() -> Any:
    """Every task type: parameters' JSON schema and a working example."""
    return [_out(name) for name in TASK_TYPES]
