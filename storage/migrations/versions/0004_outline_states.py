"""each score keeps its layer's placement against the expected outline

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Issue 18: the geometry channel compares a layer's placement against its outline (the part's
offset and shape deviation) with the job's normal placement, the median of its earlier
unflagged layers. The scorer stores each layer's placement with its score (NULL when the layer
had no outline or was placed off the job's normal), so a restarted scorer reads the job's
normal placement back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "scores",
        sa.Column("outline_state", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("scores", "outline_state")
