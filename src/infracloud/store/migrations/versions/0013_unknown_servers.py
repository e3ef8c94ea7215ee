"""unknown servers: what hosts' agents run that the database does not know, until reaped or adopted

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 00:08:07.818333
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('unknown_servers',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('host_id', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('project_id', sa.String(length=32), nullable=True),
    sa.Column('ip_address', sa.String(length=45), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_unknown_servers_host_id_hosts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_unknown_servers'))
    )
    with op.batch_alter_table('unknown_servers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_unknown_servers_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_unknown_servers_state'), ['state'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('unknown_servers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unknown_servers_state'))
        batch_op.drop_index(batch_op.f('ix_unknown_servers_host_id'))

    op.drop_table('unknown_servers')
