"""layer references and detector channels

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Issue 18 (layer-aware detection): each score keeps its per-channel scores (texture,
geometry) and the channels that fired, and why a sent outline could not be used; each alarm
keeps the channels that fired on its layers; ``layer_images`` holds the last layer images of
each job, so a restarted scorer compares a layer with the same previous layer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from storage.roles import grant_roles

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "scores",
        sa.Column(
            "channel_scores",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column("scores", sa.Column("fired", sa.Text(), server_default="", nullable=False))
    op.add_column("scores", sa.Column("outline_error", sa.Text(), nullable=True))
    op.add_column("alarms", sa.Column("channels", sa.String(length=60), nullable=True))
    op.create_table(
        "layer_images",
        sa.Column("printer", sa.String(length=200), nullable=False),
        sa.Column("job", sa.String(length=200), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=False),
        sa.Column("channels", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("printer", "job", "layer"),
    )
    grant_roles(op.get_bind())  # layer_images: the writer only (see grant_roles)


def downgrade() -> None:
    op.drop_table("layer_images")
    op.drop_column("alarms", "channels")
    op.drop_column("scores", "outline_error")
    op.drop_column("scores", "fired")
    op.drop_column("scores", "channel_scores")
