"""Accounts: token versions, soft deletion, case-insensitive usernames; schedules' skipped runs

users.token_version (bumped on a password change, a role change and deletion: tokens carry it),
users.deleted_at (a deleted account stays as a row, so its name and id are never reused) and
users.username_key (the lower-cased name, unique: `Alice` and `alice` are one name).
schedules.skipped_count, last_skipped_at and last_skip_reason: runs the beat skipped.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 17:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    clashes = bind.execute(
        sa.text("SELECT lower(username) FROM users GROUP BY lower(username) HAVING count(*) > 1")
    ).scalars()
    if names := sorted(clashes):
        raise RuntimeError(
            "usernames become unique ignoring case, but these are held by several accounts: "
            f"{', '.join(names)}; rename or delete all but one of each, then migrate again"
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("token_version", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("username_key", sa.String(length=64), nullable=True))
    op.execute("UPDATE users SET username_key = lower(username)")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("username_key", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index("ix_users_username_key", ["username_key"], unique=True)
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("skipped_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("last_skipped_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_skip_reason", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_column("last_skip_reason")
        batch_op.drop_column("last_skipped_at")
        batch_op.drop_column("skipped_count")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_username_key")
        batch_op.drop_column("username_key")
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("token_version")
