"""The SQLite fast path: units of work run whole in aiosqlite's worker thread
(``worker``), hot statements sent to sqlite3 directly (``prepared``), queued
writers committed together (``group_commit``)."""
