"""tasks.result_bytes and tasks.result_summary: stored result sizes and scalar fields

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:41:17.530112
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "result_summary",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
    # Results stored before this revision count towards their owners' quotas too (a JSON
    # null is what a retry leaves); their summaries stay empty.
    if op.get_bind().dialect.name == "postgresql":
        text, size = "result::text", "octet_length(result::text)"
    else:
        text, size = "result", "length(CAST(result AS BLOB))"
    op.execute(
        f"UPDATE tasks SET result_bytes = {size} "  # noqa: S608 - constants, no input
        f"WHERE result IS NOT NULL AND {text} <> 'null' AND result_bytes IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("result_summary")
        batch_op.drop_column("result_bytes")
