"""Connectors behind :mod:`auto_workflow.connectors`: named profiles, the per-process registry,
and one module per kind (``_postgres`` needs psycopg, ``_storage`` needs fsspec; each is
imported only when a profile of its kind is first used)."""
