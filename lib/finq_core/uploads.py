"""Uploaded CSVs in the database, by kind: price tables (parsed at once, for
csv_portfolio_analytics) and batch items (kept as text, header checked at once, for
POST /api/v1/batches `upload_id`). Store one, load it back for its owner.

Shared by the API (which stores uploads and checks references at submission) and the worker
(which loads the table a task names). Loading always takes the owner: an upload is found only
for the user who uploaded it, so a task can never compute on somebody else's data, whatever
id it was given.
"""

import uuid
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from finq_core import batch_csv
from finq_core.errors import InvalidInput, Problem
from finq_core.models import Upload, UploadKind
from finq_engine.prices import PriceTable

# Little-endian float64 in C order, whatever the machine that wrote or reads it.
PRICE_DTYPE = np.dtype("<f8")


def new_upload(owner: str, filename: str, table: PriceTable, size_bytes: int) -> Upload:
    prices = np.ascontiguousarray(table.prices, dtype=PRICE_DTYPE)
    return Upload(
        id=uuid.uuid4(),
        owner=owner,
        kind=UploadKind.PRICES.value,
        filename=filename[:255],
        assets=list(table.assets),
        dates=list(table.dates),
        rows=table.rows,
        first_date=table.dates[0],
        last_date=table.dates[-1],
        prices=prices.tobytes(),
        size_bytes=size_bytes,
    )


def new_items_upload(owner: str, filename: str, data: bytes, max_items: int) -> Upload:
    """An upload of batch items: the CSV text as given, once its header is usable and it holds
    at most `max_items` rows; InvalidInput on `file` otherwise (the rows themselves are
    checked by the batch that names it, against its type)."""
    where = ("body", "file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput([Problem(where, f"not UTF-8 text (byte {exc.start})")]) from None
    lines = text.splitlines()
    columns = batch_csv.header(lines, where)
    items = batch_csv.count_rows(lines)
    if items > max_items:
        raise InvalidInput(
            [Problem(where, f"{items} rows: at most {max_items} items per batch (BATCH_MAX_ITEMS)")]
        )
    return Upload(
        id=uuid.uuid4(),
        owner=owner,
        kind=UploadKind.ITEMS.value,
        filename=filename[:255],
        rows=items,
        columns=columns,
        items_csv=text,
        size_bytes=len(data),
    )


def parse_id(value: Any) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        return None


def find_upload(session: Session, upload_id: Any, owner: str) -> Upload | None:
    """The upload if it exists *and* belongs to `owner`; None otherwise (same answer)."""
    uid = parse_id(upload_id)
    if uid is None:
        return None
    upload: Upload | None = session.scalars(
        select(Upload).where(Upload.id == uid, Upload.owner == owner)
    ).first()
    return upload


def upload_table(upload: Upload) -> PriceTable:
    """The price table of an upload of kind prices."""
    assert upload.prices is not None and upload.assets is not None and upload.dates is not None
    prices = (
        np.frombuffer(upload.prices, dtype=PRICE_DTYPE)
        .reshape(upload.rows, len(upload.assets))
        .astype(np.float64)
    )  # a writable, native-order copy
    return PriceTable(tuple(upload.dates), tuple(upload.assets), prices)


def upload_view(upload: Upload) -> dict[str, Any]:
    """The public JSON shape of an upload (its data stays server-side)."""
    return {
        "id": str(upload.id),
        "kind": upload.kind,
        "filename": upload.filename,
        "columns": upload.columns,
        "assets": upload.assets,
        "rows": upload.rows,
        "first_date": upload.first_date,
        "last_date": upload.last_date,
        "size_bytes": upload.size_bytes,
        "created_at": upload.created_at,
    }
