"""Storage: schema, writes and the query layer (the only place with SQL). See db/database.py."""

from db.database import Database, DatabaseError, DatabaseUnavailable, init_schema, open_database, ping

__all__ = ["Database", "DatabaseError", "DatabaseUnavailable", "init_schema", "open_database", "ping"]
