"""The one exception hierarchy of abathur.

Every error a caller can provoke with bad input or a missing row is an
``AbathurError``. Those the spec calls ``ValueError`` also subclass it, so
``except ValueError`` keeps working for callers written against the spec.
"""

from __future__ import annotations


class AbathurError(Exception):
    """Base class of every error raised by abathur."""


class ValidationError(AbathurError, ValueError):
    """Input that breaks a rule: wrong type, bad enum value, malformed namespace."""


class NotFoundError(AbathurError, ValueError):
    """The named session, memory key, task or document does not exist."""


class AlreadyExistsError(AbathurError, ValueError):
    """A create met an existing row with the same identity."""


class ConflictError(AbathurError, ValueError):
    """The operation is not allowed in the row's current state."""


class InvalidTransitionError(ConflictError):
    """A lifecycle transition that the state machine forbids."""


class StaleSessionError(ConflictError):
    """Optimistic concurrency: another writer changed the row since it was read."""


class AccessDeniedError(AbathurError, PermissionError):
    """A scoped caller touched a namespace outside its scope."""


class ConfigurationError(AbathurError):
    """The service was asked for something it was not configured for."""


class DatabaseError(AbathurError):
    """The database failed in a way the caller cannot fix by changing input."""


class MigrationError(DatabaseError):
    """A schema migration failed or left the database inconsistent."""


class DatabaseClosedError(DatabaseError):
    """The Database was closed; open a new one to go on."""


class DatabaseBusyError(DatabaseError):
    """Other writers held the database's locks through every retry."""


class ConnectionLostError(DatabaseError):
    """The database server could not be reached, or the connection to it was
    lost, and it did not come back within the retry budget. Nothing of the
    failed call was committed."""


class CommitOutcomeUnknownError(ConnectionLostError):
    """The connection was lost while the transaction was committing: the
    server may or may not have committed it. Not retried automatically;
    the caller must check before doing it again."""


class StorageFullError(DatabaseError):
    """The disk (or the database's size limit) is full; nothing of the failed
    call was committed. Free space, then retry."""


class EmbeddingError(AbathurError):
    """An embedder failed: its call raised, or it returned vectors of the wrong
    number or dimension, or with NaN, infinite or all-zero components. The
    write that needed the embedding does not happen."""
