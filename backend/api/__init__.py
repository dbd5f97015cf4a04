"""The HTTP edge: FastAPI routes over the domain modules. Thin by design."""
