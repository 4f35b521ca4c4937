"""Fixtures of the integration tests beyond tests/conftest.py's services."""

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy
from sqlalchemy import text


@pytest.fixture
def fresh_database(postgres_url: str) -> Iterator[str]:
    """An empty database of its own on the test cluster, dropped afterwards."""
    name = f"finq_mig_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
