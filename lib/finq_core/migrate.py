"""Apply the database migrations: `python -m finq_core.migrate` (what `finq-service migrate`,
`make run`, the compose `migrate` service and the tests run). Safe to run again."""

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from finq_core.config import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def main(argv: list[str]) -> int:
    if len(argv) > 1 and argv[1] == "revision":
        command.revision(alembic_config(), message=argv[2], autogenerate=True)
        return 0
    upgrade()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
