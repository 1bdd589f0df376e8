"""The embedded servers where a user may put them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from layerwatch.core.embedded import PG_SUPERUSER, EmbeddedPostgres


def test_postgres_starts_from_a_long_path(tmp_path: Path) -> None:
    """A clone in a deep folder: the state directory's path is longer than a Unix socket path
    may be (107 bytes), which once stopped the server from starting (`make demo` failed)."""
    home = tmp_path.joinpath(*(["a-folder-with-a-long-name"] * 5))
    assert len(str(home / "postgres" / "data" / ".s.PGSQL.65535")) > 107
    pg = EmbeddedPostgres(home)
    state = pg.start()
    try:
        engine = create_engine(pg.url(state.port, PG_SUPERUSER))
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar() == 1
        engine.dispose()
    finally:
        assert pg.stop()
