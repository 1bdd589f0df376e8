"""Which PostgreSQL the presentation commands (sync, report) point at.

The configured one (``LAYERWATCH_DATABASE_URL``), else the embedded server if it is running.
It is never started here: a report or a dashboard needs the data the services wrote into it.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

from layerwatch.core.settings import Settings


class NoDatabaseError(RuntimeError):
    """Neither a configured database nor a running embedded one."""


def service_database(settings: Settings) -> tuple[URL, bool]:
    """(URL, is the embedded server)."""
    from layerwatch.core.embedded import EmbeddedServerError, resolve_database

    try:
        url, _admin = resolve_database(settings, start=False)
    except EmbeddedServerError as exc:
        raise NoDatabaseError(str(exc)) from None
    return make_url(url), settings.database_url is None
