"""remember the last version whose init succeeded

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("scripts") as batch:
        batch.add_column(sa.Column("good_content", sa.Text, nullable=True))
    # Scripts that were initialized successfully before this revision: their content is good.
    op.execute(
        sa.text("UPDATE scripts SET good_content = content WHERE initialized = :yes").bindparams(
            yes=True
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("scripts") as batch:
        batch.drop_column("good_content")
