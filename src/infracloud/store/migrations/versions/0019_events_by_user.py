"""events by user: an index on the acting user's id (`infracloud events --user`)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 04:30:00.000000
"""

from alembic import op


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_actor_id', ['actor_id', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_actor_id')
