"""The single source of truth for task types: name, parameter model, runner and example.

The API validates `params` with `TaskType.params_model`, publishes `json_schema()` at
`/api/v1/task-types`, and the worker runs `TaskType.execute` on the stored params.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from finq_engine import amortization
from finq_engine.context import RunContext
from finq_engine.jsonsafe import to_json


@dataclass(frozen=True)
class TaskType:
    name: str
    title: str
    params_model: type[BaseModel]
    run: Callable[[Any, RunContext], Mapping[str, Any]]
    example: dict[str, Any]
    # Rough cost bound used to reject absurd requests early (elements touched).
    tags: tuple[str, ...] = field(default=())

    def parse(self, params: Mapping[str, Any]) -> BaseModel:
        """Validate raw params; raises pydantic.ValidationError with field paths."""
        return self.params_model.model_validate(params)

    def execute(self, params: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        """Validate again (the worker trusts nothing it did not check) and compute."""
        parsed = self.parse(params)
        result: dict[str, Any] = to_json(dict(self.run(parsed, ctx)))
        return result

    def json_schema(self) -> dict[str, Any]:
        return self.params_model.model_json_schema()


def _build() -> dict[str, TaskType]:
    types = [
        TaskType(
            name="loan_amortization",
            title="Loan amortization schedule",
            params_model=amortization.LoanAmortizationParams,
            run=amortization.loan_amortization,
            example={"principal": 10000, "annual_rate": 0.05, "years": 30},
        ),
    ]
    return {t.name: t for t in types}


TASK_TYPES: dict[str, TaskType] = _build()


def get_task_type(name: str) -> TaskType | None:
    return TASK_TYPES.get(name)
