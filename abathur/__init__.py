"""abathur: the persistence layer of an agent orchestrator."""

from abathur.infrastructure.database import Database

__all__ = ["Database"]
__version__ = "0.2.0"
