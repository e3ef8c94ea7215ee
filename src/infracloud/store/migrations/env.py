"""Alembic environment: migrations run on the connection the controller hands over."""

from typing import Any, Literal

from alembic import context

from infracloud.store.models import Base, UTCDateTime


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Migrations stay free of model imports: UTC datetimes are plain timezone-aware DateTimes."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("infracloud migrations run through Database.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    render_item=_render_item,
)
with context.begin_transaction():
    context.run_migrations()
