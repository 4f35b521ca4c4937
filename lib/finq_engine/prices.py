"""Daily price tables: parse and validate an uploaded CSV into a dates x assets matrix.

The format: a header row whose first cell names the date column and whose other cells name
the assets (plain names: `unsafe_name` says what is refused); then one row per day, an ISO
date (YYYY-MM-DD) and one positive price per asset. Dates must be strictly increasing (no
duplicates), and at least `MIN_ROWS` rows are needed to compute two returns (a volatility
needs two).

Parsing is here, in the pure engine, and not in the API, because the rules are the engine's:
what a calculation can run on. Every problem raises `PriceTableError` with a message that
names the line and column, so a user can fix the file without guessing. Cells are converted
to numbers by NumPy in one call; only when that fails do we walk the cells to find the first
bad one, so a valid 5 MB file costs one pass.
"""

import csv
import io
import math
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np

from finq_engine.stats import FloatArray

if TYPE_CHECKING:
    from _csv import Reader as CsvReader  # what csv.reader returns; not importable as csv.*

MIN_ROWS = 3
MAX_ASSET_NAME = 64
# A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection").
FORMULA_STARTS = "=+-@"


class PriceTableError(ValueError):
    """The file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class PriceTable:
    """Prices, one row per date (ascending) and one column per asset."""

    dates: tuple[str, ...]
    assets: tuple[str, ...]
    prices: FloatArray  # shape (len(dates), len(assets)), float64, every entry > 0

    @property
    def rows(self) -> int:
        return len(self.dates)


def unsafe_name(name: str) -> str | None:
    """Why an asset name cannot be shown as given, or None. Names reach spreadsheets, charts
    and pages: a formula start runs there, `$...$` is math to matplotlib, a leading `_` hides
    the name from a chart's legend, control and bidirectional formatting characters reorder
    or hide what a reader sees."""
    if name[0] in FORMULA_STARTS:
        return f"starts with {name[0]!r}, which a spreadsheet would run as a formula"
    if name[0] == "_":
        return "starts with '_', which charts leave out of their legend"
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        return "contains control or bidirectional formatting characters"
    if name.count("$") >= 2:
        return "contains '$...$', which charts would read as math markup"
    return None


def _header(row: list[str] | None, max_assets: int) -> tuple[str, ...]:
    if row is None:
        raise PriceTableError(
            "the file is empty; expected a header row such as 'date,ASSET1,ASSET2'"
        )
    cells = [c.strip() for c in row]
    if len(cells) < 2:
        raise PriceTableError(
            "bad header: expected a date column followed by at least one "
            "asset column, e.g. 'date,ASSET1,ASSET2'"
        )
    if not cells[0]:
        raise PriceTableError("bad header: the first column (the dates) has no name")
    assets = cells[1:]
    if len(assets) > max_assets:
        raise PriceTableError(f"bad header: {len(assets)} asset columns; at most {max_assets}")
    seen: set[str] = set()
    for i, name in enumerate(assets, start=2):
        if not name:
            raise PriceTableError(f"bad header: column {i} has no asset name")
        if len(name) > MAX_ASSET_NAME:
            raise PriceTableError(
                f"bad header: column {i}'s name is longer than {MAX_ASSET_NAME} characters"
            )
        if reason := unsafe_name(name):
            raise PriceTableError(f"bad header: column {i}'s name {name!r} {reason}")
        if name in seen:
            raise PriceTableError(f"bad header: asset {name!r} appears twice")
        seen.add(name)
    return tuple(assets)


def _first_bad_cell(
    cells: list[list[str]], lines: list[int], assets: tuple[str, ...]
) -> PriceTableError:
    """Locate the first cell NumPy could not convert (the slow path, only on failure)."""
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                return PriceTableError(
                    f"line {lines[r]}, column {assets[c]!r}: {cell.strip()!r} is not a number"
                )
            if not math.isfinite(value):
                return PriceTableError(
                    f"line {lines[r]}, column {assets[c]!r}: {cell.strip()!r}"
                    " is not a finite number"
                )
    return PriceTableError("a price is not a number")  # pragma: no cover - NumPy disagreed


def _decode(data: bytes) -> str:
    """The file as text: UTF-8 (a BOM is dropped), and no NUL bytes (a binary file)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PriceTableError(f"the file is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise PriceTableError("the file is not text (it contains NUL bytes)")
    return text


def _row_date(row: list[str], line: int, previous: date | None) -> date:
    """The row's date, which must come strictly after the previous row's."""
    raw_date = row[0].strip()
    try:
        day = date.fromisoformat(raw_date)
    except ValueError:
        raise PriceTableError(
            f"line {line}, date column: {raw_date!r} is not a date (YYYY-MM-DD)"
        ) from None
    if previous is not None and day <= previous:
        what = "a duplicate date" if day == previous else "out of order"
        raise PriceTableError(
            f"line {line}: {day.isoformat()} is {what}; dates must "
            f"be strictly increasing (previous {previous.isoformat()})"
        )
    return day


@dataclass
class _Rows:
    """The data rows read so far: ISO dates, the price cells (as text) and their line numbers."""

    dates: list[str]
    cells: list[list[str]]
    lines: list[int]


def _read_rows(reader: "CsvReader", width: int, max_rows: int) -> _Rows:
    """Read the data rows after the header, skipping blank lines; raise on the first bad one."""
    rows = _Rows([], [], [])
    previous: date | None = None
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue  # blank lines (a trailing newline, spacing) carry nothing
        line = reader.line_num
        if len(row) != width:
            raise PriceTableError(f"line {line} has {len(row)} cells; the header has {width}")
        if len(rows.dates) >= max_rows:
            raise PriceTableError(f"too many rows: at most {max_rows:,} dates")
        previous = _row_date(row, line, previous)
        rows.dates.append(previous.isoformat())
        rows.cells.append(row[1:])
        rows.lines.append(line)
    return rows


def _prices(rows: _Rows, assets: tuple[str, ...]) -> FloatArray:
    """The price cells as a float64 matrix; every entry a finite, positive number."""
    cells, lines = rows.cells, rows.lines
    try:
        prices = np.array(cells, dtype=np.float64)
    except ValueError:
        raise _first_bad_cell(cells, lines, assets) from None
    finite = np.isfinite(prices)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise PriceTableError(
            f"line {lines[r]}, column {assets[c]!r}: {cells[r][c].strip()!r} is not a finite number"
        )
    bad = prices <= 0
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise PriceTableError(
            f"line {lines[r]}, column {assets[c]!r}: price {cells[r][c].strip()} is not positive"
        )
    return prices


def parse_price_csv(data: bytes, max_assets: int = 200, max_rows: int = 100_000) -> PriceTable:
    """Parse a CSV of daily prices; raise PriceTableError naming the first problem."""
    reader = csv.reader(io.StringIO(_decode(data), newline=""))
    try:
        assets = _header(next(reader, None), max_assets)
        rows = _read_rows(reader, len(assets) + 1, max_rows)
    except csv.Error as exc:
        raise PriceTableError(f"line {reader.line_num}: malformed CSV ({exc})") from None
    if len(rows.dates) < MIN_ROWS:
        raise PriceTableError(
            f"too few rows: {len(rows.dates)} dates; at least {MIN_ROWS} are needed (two returns)"
        )
    return PriceTable(tuple(rows.dates), assets, _prices(rows, assets))
