"""The engine room: URLs, the engine and its connection settings, units of
work (``Storage``), the error seam, migrations, health checks and background
upkeep. Knows nothing of services."""
