"""Engine, sessions, and the schema gate: services refuse an out-of-date schema."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaError(RuntimeError):
    """The database cannot be used: unreachable, or its schema is not the code's."""


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


@lru_cache(maxsize=8)
def make_engine(url: str) -> Engine:
    return create_engine(normalise_url(url), pool_pre_ping=True, future=True)


def sessions(url: str) -> sessionmaker[Session]:
    return sessionmaker(make_engine(url), expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("postgresql://x/y"))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    try:
        with make_engine(url).connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise SchemaError(f"cannot reach PostgreSQL at {_safe(url)}: {exc.orig}") from exc


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def require_current_schema(url: str) -> None:
    """Raise :class:`SchemaError` naming `layerwatch db upgrade` unless the schema is at head."""
    try:
        current = current_revision(url)
    except SchemaError as exc:
        raise SchemaError(
            f"{exc}\nIf the schema was never created, run `layerwatch db upgrade`."
        ) from exc
    head = head_revision()
    if current != head:
        raise SchemaError(
            f"database schema is at {current or 'nothing'}, this LayerWatch needs {head}: "
            "run `layerwatch db upgrade`"
        )


def _safe(url: str) -> str:
    from layerwatch.core.settings import mask_url

    return mask_url(url)
