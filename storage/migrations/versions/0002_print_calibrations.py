"""print calibrations

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

The score sequences of whole normal prints, per model version: the monitor fits its level
model (the random-effects Phase I: how prints differ, how a print's level drifts) on them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from storage.roles import grant_roles

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "print_calibrations",
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("prints", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("levels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("model_version"),
    )
    grant_roles(op.get_bind())


def downgrade() -> None:
    op.drop_table("print_calibrations")
