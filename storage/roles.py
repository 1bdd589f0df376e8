"""Least-privileged roles, created by migrations.

``layerwatch_writer``: what the services use — SELECT/INSERT/UPDATE/DELETE, no DDL.
``layerwatch_grafana``: what Grafana uses — SELECT only.
Passwords come from the settings ``writer_db_password`` / ``grafana_db_password``
(``LAYERWATCH_WRITER_DB_PASSWORD`` / ``LAYERWATCH_GRAFANA_DB_PASSWORD``); without one the
role can only log in where the server trusts the connection (the embedded server).
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from layerwatch.core.settings import get_settings
from storage.models import READER_ROLE, WRITER_ROLE


def _ensure_role(conn: Connection, role: str) -> None:
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    if not exists:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    s = get_settings()
    secret = s.writer_db_password if role == WRITER_ROLE else s.grafana_db_password
    if secret is not None and (password := secret.get_secret_value()):
        # Bind parameters are not allowed in utility statements: quote it as a literal.
        literal = conn.exec_driver_sql("SELECT quote_literal(%s)", (password,)).scalar_one()
        conn.execute(text(f'ALTER ROLE "{role}" PASSWORD {literal}'))


def grant_roles(conn: Connection) -> None:
    """Create the roles if needed and grant them exactly what they need on this schema."""
    for role in (WRITER_ROLE, READER_ROLE):
        _ensure_role(conn, role)
    db = conn.execute(text("SELECT current_database()")).scalar_one()
    for role in (WRITER_ROLE, READER_ROLE):
        conn.execute(text(f'GRANT CONNECT ON DATABASE "{db}" TO "{role}"'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        conn.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
    conn.execute(
        text(f'GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{WRITER_ROLE}"')
    )
    conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{WRITER_ROLE}"'))
    # The writer must not touch Alembic's bookkeeping.
    conn.execute(text(f'REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM "{WRITER_ROLE}"'))
    # Layer images are the scorer's working data (camera frames), not something dashboards
    # show: kept from Grafana here, so a later migration's grants do not open them again.
    if conn.execute(text("SELECT to_regclass('public.layer_images')")).scalar() is not None:
        conn.execute(text(f'REVOKE SELECT ON layer_images FROM "{READER_ROLE}"'))
