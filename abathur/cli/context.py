"""What every command shares: the database to open, running async work, output, errors.

Commands are thin: they parse arguments, call one service through
``run_with_db`` and print the result with ``emit``. Errors that bad input can
cause (abathur's own, ``ValueError``, ``OSError``, driver errors) become one
line on stderr and exit code 1; click reports usage errors itself (exit 2).
Anything else is a bug: one line too, unless ``ABATHUR_DEBUG=1`` asks for the
traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic_core import to_jsonable_python
from sqlalchemy.exc import SQLAlchemyError

from abathur.embeddings import Embedder, HashingEmbedder, OpenAICompatibleEmbedder
from abathur.errors import (
    AbathurError,
    ConfigurationError,
    DatabaseError,
    NotFoundError,
    ValidationError,
)
from abathur.infrastructure.database import Database

T = TypeVar("T")

DEBUG_ENV = "ABATHUR_DEBUG"
EMBEDDER_ENV = "ABATHUR_EMBEDDER"
EMBEDDER_MODEL_ENV = "ABATHUR_EMBEDDER_MODEL"
EMBEDDER_KEY_ENV = "ABATHUR_EMBEDDER_API_KEY"


def make_embedder(spec: str) -> Embedder:
    """The embedder a command line names: ``hashing`` (``HashingEmbedder``, 384
    dims), ``hashing:DIMS``, or the base URL of a server speaking the OpenAI
    ``/v1/embeddings`` API, whose model is ``ABATHUR_EMBEDDER_MODEL`` (and key
    ``ABATHUR_EMBEDDER_API_KEY``, if any)."""
    if spec == "hashing":
        return HashingEmbedder()
    if spec.startswith("hashing:"):
        dims = spec.partition(":")[2]
        if not dims.isdigit():
            raise ValidationError(f"embedder {spec!r}: use hashing:DIMS with a whole number")
        return HashingEmbedder(dims=int(dims))
    if spec.startswith(("http://", "https://")):
        model = os.environ.get(EMBEDDER_MODEL_ENV)
        if not model:
            raise ConfigurationError(
                f"embedder {spec!r} is a model server: set {EMBEDDER_MODEL_ENV} to its model"
            )
        return OpenAICompatibleEmbedder(spec, model, api_key=os.environ.get(EMBEDDER_KEY_ENV))
    raise ValidationError(
        f"unknown embedder {spec!r}: use hashing, hashing:DIMS or a model server's http(s) URL"
    )


def embedder_from_env() -> Embedder | None:
    """The embedder ``ABATHUR_EMBEDDER`` names, or None when it is unset: every
    command's memory writes then store embeddings for it."""
    spec = os.environ.get(EMBEDDER_ENV)
    return make_embedder(spec) if spec else None


embedder_option = click.option(
    "--embedder",
    "embedder_spec",
    envvar=EMBEDDER_ENV,
    default="hashing",
    show_default=True,
    show_envvar=True,
    help="hashing, hashing:DIMS, or a model server's base URL (model: ABATHUR_EMBEDDER_MODEL).",
)


@dataclass(frozen=True)
class AppContext:
    """The root options, handed to every command through ``click.Context.obj``."""

    db_url: str
    db_url_given: bool
    """True when ``--db`` was on the command line (not the environment or default)."""


def one_line(message: str) -> str:
    """A message squeezed onto one line (driver errors often span several)."""
    return " ".join(message.split()) or "unknown error"


def describe_error(exc: BaseException) -> str:
    """The one-line text shown for ``exc``."""
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        return one_line(f"database error: {orig if orig is not None else exc}")
    if isinstance(exc, AbathurError | ValueError | OSError):
        return one_line(str(exc) or type(exc).__name__)
    return one_line(f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)")


BROKEN_PIPE_EXIT = 141
"""Exit code when stdout's reader went away: 128 + SIGPIPE, what shells report for ``seq``."""


class AbathurGroup(click.Group):
    """A click group that turns every error into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; non-click exceptions become ``click.ClickException``."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # The reader left (``abathur ... | head -1``): stop quietly, as a
            # command killed by SIGPIPE would. Output still buffered goes to
            # /dev/null so the flush at exit does not fail a second time.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            raise click.exceptions.Exit(BROKEN_PIPE_EXIT) from None
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            raise click.ClickException(describe_error(exc)) from exc


def app(ctx: click.Context) -> AppContext:
    """The root options of the running command."""
    obj = ctx.find_object(AppContext)
    if obj is None:  # pragma: no cover - the root group always sets it
        raise click.UsageError("abathur commands must run under the abathur group")
    return obj


async def ensure_schema(db: Database) -> None:
    """Migrate an empty database; refuse one at another revision than the code's head."""
    from abathur.db.migrate import known_revisions, script_directory

    script = script_directory()
    head = script.get_current_head()
    current = await db.current_revision()
    if current is None:
        await db.initialize()
    elif current not in known_revisions(script):
        raise DatabaseError(
            f"the database is at revision {current}, newer than this abathur knows "
            f"(its newest is {head}): upgrade abathur"
        )
    elif current != head:
        raise DatabaseError(
            f"the database is at revision {current} but this abathur expects {head}: "
            "run `abathur db upgrade` first"
        )


async def _check_sqlite_directory(db: Database) -> None:
    """A clear error for an SQLite file in a directory that does not exist.

    (Also spares aiosqlite a failed connect, whose worker thread outlives the
    event loop and complains about it.)
    """
    if db.is_sqlite and not db.is_memory and db.url.database:
        parent = Path(db.url.database).parent
        if not await asyncio.to_thread(parent.is_dir):
            raise NotFoundError(f"directory {str(parent)!r} of the database file does not exist")


def run_with_db(
    ctx: click.Context,
    work: Callable[[Database], Awaitable[T]],
    *,
    prepare: bool = True,
    url: str | None = None,
    embedder: Embedder | None = None,
) -> T:
    """Open the database, run ``work(db)`` on a fresh event loop, close it again.

    With ``prepare`` (every command outside ``abathur db``) an empty database
    is migrated first and one at an older or newer revision is refused. The
    database's embedder is ``embedder``, else the one ``ABATHUR_EMBEDDER`` names.
    """
    target = url if url is not None else app(ctx).db_url
    chosen = embedder if embedder is not None else embedder_from_env()

    async def go() -> T:
        db = Database(target, embedder=chosen)
        try:
            await _check_sqlite_directory(db)
            if prepare:
                await ensure_schema(db)
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(go())


def to_json(data: Any) -> str:
    """``data`` as indented JSON: datetimes in ISO 8601, pydantic models as dicts."""
    return json.dumps(
        to_jsonable_python(data, fallback=str, bytes_mode="base64"),
        indent=2,
        ensure_ascii=False,
    )


def emit(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON on stdout, or hand it to ``human`` to print readably."""
    if as_json:
        click.echo(to_json(data))
    else:
        human(data)


def compact(value: Any) -> str:
    """A JSON value on one line, for tables."""
    return json.dumps(to_jsonable_python(value, fallback=str), ensure_ascii=False)


def when(value: Any) -> str:
    """A timestamp for humans: ISO 8601 to the second, or ``-``."""
    if value is None:
        return "-"
    text = value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value)
    return str(text)


def parse_json_argument(text: str, what: str) -> Any:
    """A JSON command-line argument; ValidationError (one line) naming ``what`` if invalid."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{what} is not valid JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:
        raise ValidationError(f"{what} is not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # an integer of more digits than Python converts
        raise ValidationError(f"{what} is not valid JSON: {str(exc).split(';')[0]}") from exc


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
)
