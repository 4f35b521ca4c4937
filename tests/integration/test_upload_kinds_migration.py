"""Migration 0007 (upload kinds) on SQLite and on a real PostgreSQL: a price table uploaded
before it is a `prices` upload after it, an upload of items (no price columns) can be stored
then, and going back to 0006 removes the items and keeps the price table."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import text

from finq_core.migrate import upgrade
from finq_core.models import UTCDateTime
from finq_core.timeutil import utcnow

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/migrate.db"
    else:
        yield request.getfixturevalue("fresh_database")


def insert_upload(conn: sqlalchemy.Connection, **columns: object) -> uuid.UUID:
    upload_id = uuid.uuid4()
    table = sqlalchemy.table(
        "uploads",
        sqlalchemy.column("id", sqlalchemy.Uuid()),
        *(sqlalchemy.column(n) for n in ("owner", "filename", "rows", "size_bytes")),
        sqlalchemy.column("created_at", UTCDateTime()),
        *(sqlalchemy.column(n, sqlalchemy.JSON()) for n in ("assets", "dates", "columns")),
        *(sqlalchemy.column(n) for n in columns if n not in ("assets", "dates", "columns")),
    )
    row = {"id": upload_id, "owner": "ann", "filename": "f.csv", "rows": 3, "size_bytes": 9}
    conn.execute(table.insert().values(**row, created_at=utcnow(), **columns))
    return upload_id


PRICES = {
    "assets": ["A"],
    "dates": ["2024-01-01", "2024-01-02", "2024-01-03"],
    "first_date": "2024-01-01",
    "last_date": "2024-01-03",
    "prices": b"\0" * 24,
}


def kinds(engine: sqlalchemy.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, kind FROM uploads")).all()
    return {str(uuid.UUID(str(r[0]))): r[1] for r in rows}


def test_price_tables_become_prices_uploads_and_items_go_with_a_downgrade(
    empty_database: str,
) -> None:
    from alembic import command

    from finq_core.migrate import alembic_config

    upgrade(empty_database, "0006")
    engine = sqlalchemy.create_engine(empty_database)
    try:
        with engine.begin() as conn:
            table_id = insert_upload(conn, **PRICES)
        upgrade(empty_database, "0007")
        assert kinds(engine) == {str(table_id): "prices"}
        with engine.begin() as conn:
            items_id = insert_upload(
                conn, kind="items", columns=["principal"], items_csv="principal\n1\n2\n3\n"
            )
        with engine.connect() as conn:
            text_of = conn.execute(
                text("SELECT items_csv, assets FROM uploads WHERE kind = 'items'")
            ).one()
        assert text_of[0] == "principal\n1\n2\n3\n" and text_of[1] is None
        assert kinds(engine) == {str(table_id): "prices", str(items_id): "items"}
        engine.dispose()
        command.downgrade(alembic_config(empty_database), "0006")
        with engine.connect() as conn:
            left = conn.execute(text("SELECT id, first_date FROM uploads")).all()
            columns = {c["name"] for c in sqlalchemy.inspect(conn).get_columns("uploads")}
        assert [(str(uuid.UUID(str(r[0]))), r[1]) for r in left] == [(str(table_id), "2024-01-01")]
        assert not {"kind", "columns", "items_csv"} & columns
        upgrade(empty_database)  # and up again to head
        assert kinds(engine) == {str(table_id): "prices"}
    finally:
        engine.dispose()
