"""CSV of batch items: a header of parameter field names, then one item per row. Read from a
batch's inline `csv` text and from an upload of kind `items` alike, so both are refused the
same way, naming the line (`csv`/`upload_id`, `line 18`)."""

import csv
import json
from collections.abc import Iterator
from typing import Any

from finq_core.errors import InvalidInput, Location, Problem


def _cell(text: str) -> Any:
    """A CSV value as JSON would give it (numbers, booleans, lists), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def header(lines: list[str], where: Location) -> list[str]:
    """The column names of the first line; InvalidInput at `where` when they are unusable."""
    if not lines or not lines[0].strip():
        raise InvalidInput([Problem(where, "empty CSV: a header row is needed")])
    names = [name.strip() for name in next(csv.reader([lines[0]]))]
    if "" in names or len(set(names)) != len(names):
        raise InvalidInput(
            [Problem((*where, "line 1"), "column names must be non-empty and distinct")]
        )
    return names


def count_rows(lines: list[str]) -> int:
    """The items below the header (blank lines are skipped)."""
    return sum(1 for line in lines[1:] if line.strip())


def rows(
    lines: list[str], names: list[str], where: Location, base: dict[str, Any]
) -> Iterator[tuple[Location, dict[str, Any]]]:
    """Each item with its line: the row's non-empty cells merged over `base`; InvalidInput
    when a row has the wrong number of values."""
    reader = csv.reader(lines[1:])
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        at: Location = (*where, f"line {reader.line_num + 1}")
        if len(values) != len(names):
            raise InvalidInput([Problem(at, f"{len(values)} values for {len(names)} columns")])
        cells = {n: _cell(v.strip()) for n, v in zip(names, values, strict=True) if v.strip()}
        yield at, {**base, **cells}
