"""Alembic's entry point for the service database: runs the migrations on the connection
`db.migrations.alembic_config` passes (online), or renders SQL for `sqlalchemy.url`
(offline)."""

from alembic import context

from db.tables import Base

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
else:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
