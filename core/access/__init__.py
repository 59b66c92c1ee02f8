"""Who may do what, and where what is kept.

    roles     Actor, Role, Permission, the access file, allowed folders (require, require_folder)
    database  the workspace database (SQLite, or PostgreSQL for a team): db_engine, read_only
"""
