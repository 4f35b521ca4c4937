"""Uploaded CSVs (`/api/v1/uploads`), by `kind`: price tables for the
csv_portfolio_analytics task type (the default), or the items of a batch.

A price table is parsed and validated here, at once (finq_engine.prices), so a bad file is a
422 naming the line and column now rather than a failed task later; the parsed matrix is
stored in the database, and tasks refer to it by id. Items are kept as text once their header
is usable; the batch that names them checks every row against its type. Uploads are private:
every route looks the upload up by id and owner, and another user's upload answers 404, like
a missing one.
"""

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import defer

from finq_api import API_PREFIX
from finq_api.deps import CurrentUser, SessionDep, SettingsDep
from finq_api.guard import GuardedRoute, body_limit, upload_body
from finq_api.ratelimit import SubmitLimit
from finq_api.schemas import UploadOut
from finq_core.config import Settings
from finq_core.models import Upload, UploadKind
from finq_core.uploads import find_upload, new_items_upload, new_upload, upload_view
from finq_engine import PriceTableError, parse_price_csv

router = APIRouter(prefix="/uploads", tags=["uploads"], route_class=GuardedRoute)
MAX_UPLOADS_PER_USER = 100
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]+")


def _filename(raw: str | None) -> str:
    """The base name the client gave, without folders or control characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    return _UNSAFE_NAME.sub("_", name).strip()[:255] or "upload.csv"


def _file_error(message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("body", "file"), "msg": message, "type": "value_error"}]
    )


def _upload(owner: str, filename: str, kind: UploadKind, data: bytes, settings: Settings) -> Upload:
    """The record of a checked file of its kind; 422 on `file` when it is not usable."""
    if kind == UploadKind.ITEMS:
        return new_items_upload(owner, filename, data, settings.batch_max_items)
    try:
        table = parse_price_csv(data, settings.upload_max_assets, settings.upload_max_rows)
    except PriceTableError as exc:
        raise _file_error(str(exc)) from None
    return new_upload(owner, filename, table, len(data))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadOut,
    responses={
        413: {"description": "Larger than UPLOAD_MAX_BYTES"},
        422: {"description": "The CSV is not usable; `msg` says where"},
    },
)
@body_limit(upload_body)
def create_upload(
    file: Annotated[
        UploadFile,
        File(
            description="CSV. prices: a date column (YYYY-MM-DD), then one column of daily "
            "prices per asset. items: a header of parameter field names, one batch item a row."
        ),
    ],
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    _: SubmitLimit,
    kind: Annotated[
        UploadKind,
        Form(
            description="prices (default): a price table for csv_portfolio_analytics; "
            "items: the items of a batch (POST /api/v1/batches `upload_id`)"
        ),
    ] = UploadKind.PRICES,
) -> Any:
    """Check and store a CSV of daily prices, or of batch items; answers 201 with its shape
    and id."""
    data = file.file.read(settings.upload_max_bytes + 1)
    if len(data) > settings.upload_max_bytes:
        raise HTTPException(
            status_code=413,
            detail=f"The file is larger than {settings.upload_max_bytes} bytes (UPLOAD_MAX_BYTES)",
        )
    upload = _upload(user.username, _filename(file.filename), kind, data, settings)
    count = (
        session.scalar(
            select(func.count()).select_from(Upload).where(Upload.owner == user.username)
        )
        or 0
    )
    if count >= MAX_UPLOADS_PER_USER:
        raise HTTPException(
            status_code=409,
            detail=f"At most {MAX_UPLOADS_PER_USER} uploads per user; delete one first",
        )
    session.add(upload)
    session.commit()
    response.headers["Location"] = f"{API_PREFIX}/uploads/{upload.id}"
    return upload_view(upload)


@router.get("", response_model=list[UploadOut])
def list_uploads(user: CurrentUser, session: SessionDep) -> Any:
    """The caller's uploads, newest first (their data stays on the server, unread here)."""
    rows = session.scalars(
        select(Upload)
        .options(defer(Upload.dates), defer(Upload.prices), defer(Upload.items_csv))
        .where(Upload.owner == user.username)
        .order_by(Upload.created_at.desc(), Upload.id)
    )
    return [upload_view(u) for u in rows]


@router.get("/{upload_id}", response_model=UploadOut, responses={404: {"description": "Not found"}})
def get_upload(upload_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Any:
    upload = find_upload(session, upload_id, user.username)
    if upload is None:
        raise HTTPException(status_code=404, detail="Upload not found")
    return upload_view(upload)


@router.delete(
    "/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "Not found"}},
)
def delete_upload(upload_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Remove an upload; tasks that name it and have not run yet will fail (not found)."""
    upload = find_upload(session, upload_id, user.username)
    if upload is None:
        raise HTTPException(status_code=404, detail="Upload not found")
    session.delete(upload)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
