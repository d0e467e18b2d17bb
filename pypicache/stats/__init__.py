"""Statistics, metrics and their hooks: counted per worker in memory, flushed to the catalog.

The cache-hit path only adds to a dict under a lock; a background thread per worker adds the
counts to catalog.sqlite3 about once a second (and at exit) in one short transaction, so every
worker reads the same totals and no request waits for SQLite. See recorder.py.
"""
