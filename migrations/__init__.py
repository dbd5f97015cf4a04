"""Alembic migrations of curvelab's SQL schema (see backend.schema, which runs them)."""
