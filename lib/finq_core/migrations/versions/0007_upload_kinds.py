"""uploads.kind: an upload is a price table (as before) or the CSV items of a batch

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 20:30:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns only a price table has: null for an upload of items.
PRICE_COLUMNS: list[tuple[str, Any]] = [
    ("assets", sa.JSON()),
    ("dates", sa.JSON()),
    ("first_date", sa.String(length=10)),
    ("last_date", sa.String(length=10)),
    ("prices", sa.LargeBinary()),
]


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _existing(type_: Any) -> Any:
    return _json() if isinstance(type_, sa.JSON) else type_


def upgrade() -> None:
    # Batch mode: SQLite alters a column's nullability by copying the table.
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="prices")
        )
        batch.add_column(sa.Column("columns", _json(), nullable=True))
        batch.add_column(sa.Column("items_csv", sa.Text(), nullable=True))
        for name, type_ in PRICE_COLUMNS:
            batch.alter_column(name, existing_type=_existing(type_), nullable=True)


def downgrade() -> None:
    # Uploads of items have no price table to keep.
    op.execute("DELETE FROM uploads WHERE kind <> 'prices'")
    with op.batch_alter_table("uploads") as batch:
        for name, type_ in PRICE_COLUMNS:
            batch.alter_column(name, existing_type=_existing(type_), nullable=False)
        batch.drop_column("items_csv")
        batch.drop_column("columns")
        batch.drop_column("kind")
