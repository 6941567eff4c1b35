"""Relational storage: tables, engine, migrations."""
