"""A task result's array fields as rows (GET /api/v1/tasks/{id}/result?format=csv|ndjson):
row i holds element i of every array field, so the arrays must have one length. An array of
numbers gives one column named after its field; an array of records (e.g. an amortization
schedule) one column per key of its first record, named `field.key`. Scalar fields are left
out of the rows (the JSON result and the task view carry them)."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from finq_core.errors import InvalidInput, Location, Problem


@dataclass(frozen=True)
class Rows:
    columns: list[str]
    rows: Iterator[dict[str, Any]]


def _columns(name: str, values: list[Any]) -> list[tuple[str, str, str | None]]:
    """(column, field, key in a record or None) for one array field."""
    if values and isinstance(values[0], dict):
        return [(f"{name}.{key}", name, key) for key in values[0]]
    return [(name, name, None)]


def result_rows(result: dict[str, Any], where: Location) -> Rows:
    """The rows of a result's arrays, made one at a time as they are sent; InvalidInput at
    `where` when it has no array field, or arrays of different lengths."""
    arrays = {k: v for k, v in result.items() if isinstance(v, list)}
    if not arrays:
        raise InvalidInput(
            [Problem(where, "this result has no array fields to give as rows; ask for JSON")]
        )
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{k} ({n})" for k, n in lengths.items())
        raise InvalidInput(
            [
                Problem(
                    where,
                    f"this result's arrays differ in length: {sizes}; rows need one length, "
                    "ask for JSON",
                )
            ]
        )
    spec = [c for name, values in arrays.items() for c in _columns(name, values)]
    count = next(iter(lengths.values()))

    def rows() -> Iterator[dict[str, Any]]:
        for i in range(count):
            row: dict[str, Any] = {}
            for column, name, key in spec:
                value = arrays[name][i]
                row[column] = (
                    value.get(key) if key is not None and isinstance(value, dict) else value
                )
            yield row

    return Rows([c for c, _, _ in spec], rows())
