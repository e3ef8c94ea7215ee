"""per-host agent credentials: each compute host its own secret (hashed), bound to its id

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 21:50:41.775316
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('host_credentials',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('host_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('next_hash', sa.String(length=64), nullable=True),
    sa.Column('next_secret', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_host_credentials_host_id_hosts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_host_credentials')),
    sa.UniqueConstraint('next_hash', name=op.f('uq_host_credentials_next_hash')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_host_credentials_secret_hash'))
    )
    with op.batch_alter_table('host_credentials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_host_credentials_host_id'), ['host_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('host_credentials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_host_credentials_host_id'))

    op.drop_table('host_credentials')
