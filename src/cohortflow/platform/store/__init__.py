"""Platform storage: the schema (one module), the engine factory and Alembic migrations."""
