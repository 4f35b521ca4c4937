"""Rows streamed as NDJSON or CSV, a page of rows encoded at a time: what batch results
(finq_core.batch_views) and a task result's rows (finq_core.result_rows) are sent as."""

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

# Rows encoded and sent at a time.
PAGE = 1000


def ndjson_stream(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """One JSON object a line."""
    lines: list[str] = []
    for row in rows:
        lines.append(json.dumps(row, default=str))
        if len(lines) >= PAGE:
            yield ("\n".join(lines) + "\n").encode()
            lines = []
    if lines:
        yield ("\n".join(lines) + "\n").encode()


def _cell(value: Any) -> Any:
    """A CSV cell: a list or an object as its JSON text, anything else as csv writes it."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def csv_stream(columns: list[str], rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """A header of `columns`, then one line a row (keys not among the columns are left out)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for n, row in enumerate(rows, 1):
        writer.writerow({k: _cell(v) for k, v in row.items()})
        if n % PAGE == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
