"""users.result_bytes, the owner's stored results counted as they change; tasks by owner and
status: the two quota checks of every submission read an index range, not the owner's history

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 20:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("result_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE users SET result_bytes = (SELECT coalesce(sum(tasks.result_bytes), 0) "
        "FROM tasks WHERE tasks.owner = users.username)"
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_owner_status", ["owner", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_owner_status")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("result_bytes")
