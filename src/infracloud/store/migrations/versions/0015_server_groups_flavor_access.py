"""server groups, multi-create reservations, private flavors' access lists, flavor extra specs

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 03:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('flavor_projects',
    sa.Column('flavor_id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('flavor_id', 'project_id', name=op.f('pk_flavor_projects'))
    )
    op.create_table('server_groups',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('policy', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_server_groups'))
    )
    with op.batch_alter_table('server_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_server_groups_project_id'), ['project_id'],
                              unique=False)
    with op.batch_alter_table('flavors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('extra_specs', sa.JSON(), nullable=True))
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('server_group_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('reservation_id', sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f('ix_instances_server_group_id'), ['server_group_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_instances_reservation_id'), ['reservation_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_reservation_id'))
        batch_op.drop_index(batch_op.f('ix_instances_server_group_id'))
        batch_op.drop_column('reservation_id')
        batch_op.drop_column('server_group_id')
    with op.batch_alter_table('flavors', schema=None) as batch_op:
        batch_op.drop_column('extra_specs')
    with op.batch_alter_table('server_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_server_groups_project_id'))
    op.drop_table('server_groups')
    op.drop_table('flavor_projects')
