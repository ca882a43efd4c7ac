"""create scripts, script_logs

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "scripts",
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("initialized", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("init_error", sa.Text, nullable=True),
        sa.Column("last_init_time", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("uri", name="pk_scripts"),
    )
    op.create_table(
        "script_logs",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("script_uri", sa.Text, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("request_id", sa.Text, nullable=True),
        sa.Column("kind", sa.Text, nullable=True),
        sa.Column("route", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_script_logs"),
        # Never reuse a seq on SQLite, even after the newest rows were deleted.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_script_logs_script_uri", "script_logs", ["script_uri"])
    op.create_index("ix_script_logs_timestamp", "script_logs", ["timestamp"])
    op.create_index("ix_script_logs_request_id", "script_logs", ["request_id"])


def downgrade() -> None:
    op.drop_table("script_logs")
    op.drop_table("scripts")
