"""capacity samples: the usage chart's capacity over time

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 13:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('capacity_samples',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('hosts', sa.Integer(), nullable=False),
    sa.Column('vcpus', sa.Double(), nullable=False),
    sa.Column('ram_mb', sa.Double(), nullable=False),
    sa.Column('disk_gb', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_capacity_samples'))
    )
    op.create_index(op.f('ix_capacity_samples_at'), 'capacity_samples', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_capacity_samples_at'), table_name='capacity_samples')
    op.drop_table('capacity_samples')
