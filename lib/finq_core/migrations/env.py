"""Alembic environment: runs migrations against the URL given by finq_core.migrate."""

from alembic import context

from finq_core.db import make_engine
from finq_core.migrate import hold_migration_lock
from finq_core.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            # Before alembic reads the current revision: a concurrent runner finds it at head.
            hold_migration_lock(connection)
            context.run_migrations()
    engine.dispose()


run_migrations_online()
