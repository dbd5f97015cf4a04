"""Datasets: ingest of uploaded archives and the on-disk layout the worker reads."""
