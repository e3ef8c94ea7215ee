"""server actions: a server's lock and the action its host's agent is to carry out

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 03:20:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locked_by', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('task_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('task_args', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('task_args')
        batch_op.drop_column('task_id')
        batch_op.drop_column('locked_by')
