"""``abathur session``, ``memory``, ``audit`` and ``docs``: the stored data."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from click._termui_impl import ProgressBar

from abathur.cli.context import (
    compact,
    embedder_option,
    emit,
    json_option,
    make_embedder,
    parse_json_argument,
    run_with_db,
    to_json,
    when,
)
from abathur.domain.documents import SyncResult
from abathur.domain.memory import MemoryDict
from abathur.domain.namespaces import parse_namespace
from abathur.domain.sessions import ListedSession, SessionWithEvents
from abathur.errors import AbathurError, NotFoundError, ValidationError
from abathur.infrastructure.database import Database
from abathur.repositories.memory import MAX_KEY_LOCKS

# ------------------------------------------------------------------ session


@click.group("session")
def session_group() -> None:
    """Read sessions and their events."""


@session_group.command("list")
@click.option("--user", "user_id", help="Only sessions of this user.")
@click.option("--status", help="Only sessions in this status (created, active, paused, ...).")
@click.option("--app", "app_name", help="Only sessions of this application.")
@click.option("--project", "project_id", help="Only sessions of this project.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@click.pass_context
def session_list(
    ctx: click.Context,
    user_id: str | None,
    status: str | None,
    app_name: str | None,
    project_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List sessions, newest first."""

    async def work(db: Database) -> list[ListedSession]:
        return await db.sessions.list_sessions(
            app_name=app_name, user_id=user_id, project_id=project_id, status=status, limit=limit
        )

    sessions = run_with_db(ctx, work)

    def human(rows: list[ListedSession]) -> None:
        if not rows:
            click.echo("no sessions")
        for row in rows:
            click.echo(
                f"{row['id']}  {row['status']:<10}  user={row['user_id']}  "
                f"app={row['app_name']}  created {when(row.get('created_at'))}"
            )

    emit(sessions, as_json, human)


EVENT_HEADER_FIELDS = ("event_id", "timestamp", "author", "type")


def describe_event(event: Any) -> str:
    """One event on one line: time, author, type, then its other fields as JSON."""
    if not isinstance(event, dict):
        return compact(event)
    head = " ".join(
        str(event[field]) for field in ("timestamp", "author", "type") if event.get(field)
    )
    rest = {k: v for k, v in event.items() if k not in EVENT_HEADER_FIELDS}
    return f"{head}  {compact(rest)}" if rest else head or compact(event)


def print_session(session: SessionWithEvents) -> None:
    """A session and its events, readably."""
    click.echo(f"session {session['id']}  ({session['status']})")
    click.echo(f"  app:     {session['app_name']}")
    click.echo(f"  user:    {session['user_id']}")
    if session.get("project_id"):
        click.echo(f"  project: {session['project_id']}")
    click.echo(f"  created: {when(session.get('created_at'))}")
    click.echo(f"  updated: {when(session.get('last_update_time'))}")
    if session.get("terminated_at"):
        click.echo(f"  ended:   {when(session['terminated_at'])}")
    click.echo("  state:")
    state = session.get("state") or {}
    if not state:
        click.echo("    (empty)")
    for key, value in state.items():
        click.echo(f"    {key} = {compact(value)}")
    events = session.get("events") or []
    click.echo(f"  events ({len(events)}):")
    for number, event in enumerate(events, start=1):
        click.echo(f"    {number}. {describe_event(event)}")


@session_group.command("show")
@click.argument("session_id")
@click.option("--events", "recent_events", type=click.IntRange(min=0),
              help="Only the N most recent events.")  # fmt: skip
@json_option
@click.pass_context
def session_show(
    ctx: click.Context, session_id: str, recent_events: int | None, as_json: bool
) -> None:
    """Show one session with its state and events."""

    async def work(db: Database) -> SessionWithEvents | None:
        return await db.sessions.get_session(session_id, recent_events=recent_events)

    session = run_with_db(ctx, work)
    if session is None:
        raise NotFoundError(f"session {session_id!r} not found")
    emit(session, as_json, print_session)


# ------------------------------------------------------------------ memory


@click.group("memory")
def memory_group() -> None:
    """Read and write versioned long-term memory."""


def print_memory(entry: MemoryDict) -> None:
    """One memory version, readably."""
    deleted = "  [deleted]" if entry.get("is_deleted") else ""
    by = entry.get("updated_by") or entry.get("created_by") or "-"
    click.echo(
        f"{entry['namespace']} / {entry['key']}  v{entry['version']}  "
        f"({entry['memory_type']}){deleted}  by {by} at {when(entry.get('updated_at'))}"
    )
    if "score" in entry:
        click.echo(f"  score {entry['score']:.4f}")
    click.echo(f"  {compact(entry['value'])}")


def print_memories(entries: list[MemoryDict]) -> None:
    """Memory versions one after the other, or a note that there are none."""
    if not entries:
        click.echo("no memories")
    for entry in entries:
        print_memory(entry)


@memory_group.command("get")
@click.argument("namespace")
@click.argument("key")
@click.option("--version", type=int, help="That exact version (deleted ones included).")
@json_option
@click.pass_context
def memory_get(
    ctx: click.Context, namespace: str, key: str, version: int | None, as_json: bool
) -> None:
    """Show the current (or a given) version of a memory."""
    entry = run_with_db(ctx, lambda db: db.memory.get_memory(namespace, key, version))
    if entry is None:
        which = f" version {version}" if version is not None else ""
        raise NotFoundError(f"memory {namespace!r}/{key!r}{which} not found")
    emit(entry, as_json, print_memory)


@memory_group.command("put")
@click.argument("namespace")
@click.argument("key")
@click.argument("value")
@click.option("--type", "memory_type", help="semantic, episodic or procedural (for a new key).")
@click.option("--by", "actor", required=True, help="Who writes it (created_by / updated_by).")
@click.option("--task", "task_id", required=True, help="The task the audit row names.")
@click.option("--metadata", help="JSON object; replaces the key's metadata (kept if omitted).")
@click.option(
    "--ttl",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds until the key expires (default: never).",
)
@json_option
@click.pass_context
def memory_put(
    ctx: click.Context,
    namespace: str,
    key: str,
    value: str,
    memory_type: str | None,
    actor: str,
    task_id: str,
    metadata: str | None,
    ttl: float | None,
    as_json: bool,
) -> None:
    """Store VALUE (a JSON object) under NAMESPACE/KEY, whether or not it exists.

    One write (MemoryService.put_memory): a key with no live version is
    added (version 1, or the next number after a deleted or expired one) and
    needs --type; a live key gets a new version whose type and creator carry
    forward (a different --type is not applied) and whose metadata is
    --metadata if given, else kept.
    """
    parsed = parse_json_argument(value, "VALUE")
    meta = None if metadata is None else parse_json_argument(metadata, "--metadata")
    expires = None if ttl is None else _ttl_option(ttl)

    async def work(db: Database) -> MemoryDict:
        kind = memory_type
        if kind is None:
            current = await db.memory.get_memory(namespace, key)
            if current is None:
                raise ValidationError(f"{namespace}/{key} is new: --type is required")
            kind = current["memory_type"]
        return await db.memory.put_memory(
            namespace, key, parsed, kind, by=actor, task_id=task_id, metadata=meta, ttl=expires
        )

    entry = run_with_db(ctx, work)
    if as_json:
        emit(entry, as_json, print_memory)
        return
    # A new (or revived) key starts its creation time afresh; an update keeps it.
    action = "added" if entry["created_at"] == entry["updated_at"] else "updated"
    note = ""
    if memory_type is not None and memory_type != entry["memory_type"]:
        note = f" (its type stays {entry['memory_type']})"
    click.echo(f"{action} {namespace}/{key}: version {entry['version']}{note}")


def _ttl_option(seconds: float) -> timedelta:
    """``--ttl`` as a timedelta: finite, at least a microsecond (what it counts)."""
    try:
        ttl = timedelta(seconds=seconds)
    except (OverflowError, ValueError) as exc:  # an infinity, NaN, or past 10**9 days
        raise click.BadParameter(
            f"{seconds} seconds is not a usable TTL", param_hint="'--ttl'"
        ) from exc
    if not ttl:
        raise click.BadParameter(
            f"{seconds} seconds rounds to 0 microseconds", param_hint="'--ttl'"
        )
    return ttl


@memory_group.command("history")
@click.argument("namespace")
@click.argument("key")
@json_option
@click.pass_context
def memory_history(ctx: click.Context, namespace: str, key: str, as_json: bool) -> None:
    """Every version of a memory, oldest first, deleted ones included."""
    entries = run_with_db(ctx, lambda db: db.memory.get_memory_history(namespace, key))
    if not entries:
        raise NotFoundError(f"memory {namespace!r}/{key!r} not found")
    emit(entries, as_json, print_memories)


@memory_group.command("search")
@click.argument("prefix")
@click.option("--type", "memory_type", help="Only this memory type.")
@click.option("--filter", "filter_json", help='JSON filter on the value: {"status": "open"}.')
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--query", help="Rank by similarity of meaning to this text (prints scores).")
@embedder_option
@json_option
@click.pass_context
def memory_search(
    ctx: click.Context,
    prefix: str,
    memory_type: str | None,
    filter_json: str | None,
    limit: int,
    offset: int,
    query: str | None,
    embedder_spec: str,
    as_json: bool,
) -> None:
    """Current versions of live memories in the namespace subtree PREFIX.

    --filter takes the filter of MemoryService.search_memories: equality
    ({"status": "open"}), operators ({"priority": {"$gte": 3}}: $eq $ne $gt
    $gte $lt $lte $in) and dotted names ("author.name"). Newest first;
    --offset pages. With --query, best match first, each with its score (the
    cosine similarity of the embeddings, -1..1). A query search finds only
    memories embedded by the same embedder: see `abathur memory reindex`.
    """
    filter = None if filter_json is None else parse_json_argument(filter_json, "--filter")
    embedder = make_embedder(embedder_spec) if query is not None else None
    entries = run_with_db(
        ctx,
        lambda db: db.memory.search_memories(
            prefix, memory_type, limit, filter=filter, offset=offset, query=query
        ),
        embedder=embedder,
    )
    emit(entries, as_json, print_memories)


@memory_group.command("namespaces")
@click.argument("prefix", required=False)
@click.option("--suffix", help="Only namespaces ending with these whole segments.")
@click.option("--max-depth", type=click.IntRange(min=1), help="Truncate to this many segments.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@json_option
@click.pass_context
def memory_namespaces(
    ctx: click.Context,
    prefix: str | None,
    suffix: str | None,
    max_depth: int | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """The namespaces holding live memories (in the subtree PREFIX), sorted."""
    found = run_with_db(
        ctx,
        lambda db: db.memory.list_namespaces(
            prefix, suffix=suffix, max_depth=max_depth, limit=limit, offset=offset
        ),
    )

    def show(namespaces: list[str]) -> None:
        if not namespaces:
            click.echo("no namespaces")
        for namespace in namespaces:
            click.echo(namespace)

    emit(found, as_json, show)


@memory_group.command("sweep")
@click.option("--task", "task_id", help="The task the audit rows name (default: the system task).")
@click.pass_context
def memory_sweep(ctx: click.Context, task_id: str | None) -> None:
    """Soft-delete every memory whose TTL has run out (they are already invisible)."""
    count = run_with_db(ctx, lambda db: db.memory.sweep_expired(task_id=task_id))
    click.echo(f"expired {count} key(s)")


@memory_group.command("reindex")
@click.argument("prefix", required=False)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=256, show_default=True)
@embedder_option
@json_option
@click.pass_context
def memory_reindex(
    ctx: click.Context, prefix: str | None, batch_size: int, embedder_spec: str, as_json: bool
) -> None:
    """Embed the current memories (of the subtree PREFIX, or all) that lack an
    embedding of the embedder's model: after a model change, or for memories
    written without an embedder. Shows a running count on stderr."""
    embedder = make_embedder(embedder_spec)
    show = not as_json

    def progress(done: int) -> None:
        if show:
            click.echo(f"\rembedded {done} versions", nl=False, err=True)

    count = run_with_db(
        ctx,
        lambda db: db.memory.reindex(prefix, batch_size=batch_size, progress=progress),
        embedder=embedder,
    )
    if show and count:
        click.echo("", err=True)
    emit(
        {"embedded": count, "model": embedder.model},
        as_json,
        lambda r: click.echo(f"embedded {r['embedded']} memory versions with {r['model']}"),
    )


# Lines per put_memories call (one transaction each) on SQLite. 10,000 rather
# than 1,000: a 200,000-line import into an empty store ran at 17,700/s per
# CPU second in batches of 1,000, 23,100/s in batches of 10,000 and 22,500/s
# in batches of 100,000, whose items took 600 MiB against 175 MiB (maximum
# resident set; docs/design_decisions.md, "hA: put_memories' bulk load").
DEFAULT_IMPORT_BATCH = 10_000
# On PostgreSQL at most the keys put_memories locks one by one: a batch of
# more takes the bulk lock exclusively (``repositories.memory.lock_keys``),
# holding every other writer of memories off while it runs.
DEFAULT_IMPORT_BATCH_POSTGRES = MAX_KEY_LOCKS
MAX_IMPORT_BATCH = 100_000
_ITEM_ERROR = re.compile(r"item (\d+): (.*)", re.DOTALL)


@memory_group.command("import")
@click.argument(
    "source",
    metavar="FILE",
    # A byte order mark before the first line is skipped; a byte that is not
    # UTF-8 is kept (as a lone surrogate) for the error to name its line.
    type=click.File("r", encoding="utf-8-sig", errors="surrogateescape"),
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_IMPORT_BATCH),
    default=None,
    show_default=(
        f"{DEFAULT_IMPORT_BATCH:,} on SQLite, {DEFAULT_IMPORT_BATCH_POSTGRES:,} on PostgreSQL"
    ),
    help="Lines written per transaction.",
)
@json_option
@click.pass_context
def memory_import(ctx: click.Context, source: Any, batch_size: int | None, as_json: bool) -> None:
    """Load memories from FILE (JSON Lines; ``-`` reads stdin) with put_memories.

    The file is UTF-8 (a byte order mark at its start is skipped). Each
    non-blank line is one JSON object with put_memory's arguments:
    namespace, key, value, memory_type, by, task_id, and optionally metadata,
    ttl (seconds) and index. Every line is an upsert, as ``memory put``.
    Lines are written in batches of --batch-size, each in one transaction
    (on PostgreSQL a batch of more than 1,000 keys holds every other writer
    of memories off while it runs, hence its smaller default).
    A bad line stops the import with an error naming its line number:
    nothing of its batch is written, and the batches before it stay
    imported (the error says up to which line; resume from there with
    ``tail -n +LINE FILE | abathur memory import -``). Progress goes to
    stderr (not with --json); the count imported to stdout. The planner's
    statistics are refreshed at the end, and each time the import doubles,
    when the rows loaded are large next to the table (``refresh_statistics``).
    """
    stderr = sys.stderr
    show = not as_json
    total = _file_size(source)
    bar: ProgressBar[int] | None = None
    if show and total is not None:
        bar = click.progressbar(length=total, label="importing memories", file=stderr)
        bar.render_progress()

    def progress(done: int, position: int) -> None:
        if bar is not None:
            bar.update(position - bar.pos)
        elif show:
            click.echo(f"\rimported {done} memories", nl=False, err=True)

    try:
        count = run_with_db(ctx, lambda db: _import_lines(db, source, batch_size, progress))
    finally:
        if bar is not None:
            bar.render_finish()
        elif show:
            click.echo("", err=True)
    emit({"imported": count}, as_json, lambda r: click.echo(f"imported {r['imported']} memories"))


def _file_size(source: Any) -> int | None:
    """The size in bytes of a regular file (the progress bar's length), else None."""
    try:
        info = os.fstat(source.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) and info.st_size > 0 else None


def _import_item(line: str, number: int) -> dict[str, Any]:
    """One line of ``memory import`` as an item of put_memories (``ttl`` seconds
    become a timedelta)."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"line {number}: not valid JSON: {exc.msg} at column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise ValidationError(f"line {number}: not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # an integer of more digits than Python converts
        reason = str(exc).split(";")[0]
        raise ValidationError(f"line {number}: not valid JSON: {reason}") from exc
    if not isinstance(item, dict):
        raise ValidationError(f"line {number}: must be a JSON object, not {type(item).__name__}")
    ttl = item.get("ttl")
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise ValidationError(f"line {number}: ttl must be a positive number of seconds")
        try:
            item["ttl"] = timedelta(seconds=ttl)
        except OverflowError as exc:
            raise ValidationError(f"line {number}: ttl={ttl} seconds is too long") from exc
    return item


async def _import_lines(
    db: Database, source: Any, batch_size: int | None, progress: Callable[[int, int], None]
) -> int:
    """``memory import``: the lines of ``source`` written by put_memories in
    batches (``None``: the backend's default size); the number imported."""
    if batch_size is None:
        batch_size = DEFAULT_IMPORT_BATCH if db.is_sqlite else DEFAULT_IMPORT_BATCH_POSTGRES
    imported, position = 0, 0
    items: list[dict[str, Any]] = []
    numbers: list[int] = []  # the line number of each item

    known: set[str] = set()  # task ids found to exist
    analyzed = 0  # imported when the statistics were last refreshed
    check_at = 0  # imported at which to ask again whether they should be

    async def flush() -> None:
        nonlocal imported, analyzed, check_at
        try:
            await _check_tasks(db, items, known)
            await db.memory.put_memories(items, analyze=False)
        except AbathurError as exc:
            raise type(exc)(_line_error(exc, numbers, imported)) from exc
        imported += len(items)
        if imported >= check_at:
            # Each time the import doubles, the statistics catch up if the
            # rows since are many next to the table's: its own statements
            # plan with them too. Not after each batch: an ANALYZE costs
            # about as much as a batch (docs/design_decisions.md).
            if await db.memory.refresh_statistics(imported - analyzed):
                analyzed = imported
            check_at = 2 * imported
        progress(imported, position)
        items.clear()
        numbers.clear()

    number = 0
    for number, line in enumerate(source, 1):
        try:
            position += len(line.encode("utf-8"))
        except UnicodeEncodeError as exc:  # a byte surrogateescape kept
            bad = ValidationError(f"line {number}: not valid UTF-8 (column {exc.start + 1})")
            raise ValidationError(_line_error(bad, [*numbers, number], imported)) from exc
        if not line.strip():
            continue
        try:
            items.append(_import_item(line, number))
        except ValidationError as exc:
            raise ValidationError(_line_error(exc, [*numbers, number], imported)) from exc
        numbers.append(number)
        if len(items) >= batch_size:
            await flush()
    if items:
        await flush()
    if imported > analyzed:
        # The whole import against the table: after an import that (at
        # least) doubled it, or a tenth on PostgreSQL, they count its rows.
        await db.memory.refresh_statistics(imported)
    return imported


async def _check_tasks(db: Database, items: list[dict[str, Any]], known: set[str]) -> None:
    """A task that does not exist, named by the first item that gives it
    (put_memories would only name the task)."""
    for index, item in enumerate(items):
        task_id = item.get("task_id")
        if not isinstance(task_id, str) or task_id in known:
            continue
        try:
            task = await db.tasks.get_task(task_id)
        except ValidationError:
            continue  # put_memories names the item
        if task is None:
            raise NotFoundError(f"item {index}: task {task_id!r} not found")
        known.add(task_id)


def _line_error(exc: Exception, numbers: list[int], imported: int) -> str:
    """An error of a batch, told by line: ``item i`` becomes its line number,
    and what the import wrote before the batch is said."""
    message = str(exc)
    found = _ITEM_ERROR.match(message)
    if found is not None and int(found.group(1)) < len(numbers):
        message = f"line {numbers[int(found.group(1))]}: {found.group(2)}"
    elif not message.startswith("line "):
        message = f"lines {numbers[0]}-{numbers[-1]}: {message}"
    if imported:
        return (
            f"{message} (nothing from line {numbers[0]} on was written; the "
            f"{imported} memories before it were imported)"
        )
    return f"{message} (nothing was written)"


@memory_group.command("delete")
@click.argument("namespace")
@click.argument("key")
@click.option("--by", "actor", required=True, help="Who deletes it.")
@click.option("--task", "task_id", required=True, help="The task the audit row names.")
@click.pass_context
def memory_delete(ctx: click.Context, namespace: str, key: str, actor: str, task_id: str) -> None:
    """Soft-delete a memory: its versions stay in the history."""
    run_with_db(ctx, lambda db: db.memory.delete_memory(namespace, key, actor, task_id))
    click.echo(f"deleted {namespace}/{key}")


@memory_group.command("restore")
@click.argument("namespace")
@click.argument("key")
@click.argument("version", type=int)
@click.option("--by", "actor", required=True, help="Who restores it.")
@click.option("--task", "task_id", required=True, help="The task the audit row names.")
@click.pass_context
def memory_restore(
    ctx: click.Context, namespace: str, key: str, version: int, actor: str, task_id: str
) -> None:
    """Write VERSION's value again as a new version (also undeletes)."""

    async def work(db: Database) -> MemoryDict | None:
        await db.memory.restore_memory(namespace, key, version, actor, task_id)
        return await db.memory.get_memory(namespace, key)

    entry = run_with_db(ctx, work)
    new_version = entry["version"] if entry else "?"
    click.echo(f"restored {namespace}/{key} version {version} as version {new_version}")


@memory_group.command("consolidate")
@click.argument("namespace")
@click.option("--strategy", required=True, help="latest_wins, merge or llm_based.")
@click.option("--by", "actor", help="Who consolidates (default: the system actor).")
@click.option("--task", "task_id", help="The task the audit rows name (default: the system task).")
@click.pass_context
def memory_consolidate(
    ctx: click.Context, namespace: str, strategy: str, actor: str | None, task_id: str | None
) -> None:
    """Resolve keys with several live versions in the subtree of NAMESPACE."""

    async def work(db: Database) -> int:
        options: dict[str, Any] = {"task_id": task_id}
        if actor is not None:
            options["consolidated_by"] = actor
        return await db.memory.consolidate_memories(namespace, strategy, **options)

    count = run_with_db(ctx, work)
    click.echo(f"consolidated {count} key(s) in {namespace}")


# ------------------------------------------------------------------ audit


@click.group("audit")
def audit_group() -> None:
    """Read the audit trail."""


def print_audit(rows: list[Any]) -> None:
    """Audit rows, newest first, one per line."""
    if not rows:
        click.echo("no audit entries")
    for row in rows:
        target = ""
        if row.memory_namespace:
            target = f"  {row.memory_namespace}"
            if row.memory_entry_id is not None:
                target += f" (entry {row.memory_entry_id})"
        operation = f" [{row.memory_operation_type}]" if row.memory_operation_type else ""
        click.echo(
            f"{when(row.timestamp)}  {row.action_type}{operation}  task={row.task_id}{target}"
        )


@audit_group.command("tail")
@click.option("--namespace", help="Only memory operations in this namespace subtree.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@click.pass_context
def audit_tail(ctx: click.Context, namespace: str | None, limit: int, as_json: bool) -> None:
    """The newest audit entries."""
    if namespace is not None:
        parse_namespace(namespace, allow_prefix_only=True)
    rows = run_with_db(ctx, lambda db: db.tasks.audit_tail(namespace, limit))
    emit(rows, as_json, print_audit)


# ------------------------------------------------------------------ docs


@click.group("docs")
def docs_group() -> None:
    """The document index."""


def print_sync(result: SyncResult) -> None:
    """A sync's counts, then every missing file and problem."""
    click.echo(
        f"{result.directory}: {result.added} added, {result.changed} changed, "
        f"{result.unchanged} unchanged, {result.missing} missing, "
        f"{len(result.problems)} problem(s)"
    )
    for path in result.missing_files:
        click.echo(f"  missing: {path}")
    for problem in result.problems:
        click.echo(f"  problem: {problem.file_path}: {problem.reason}")


@docs_group.command("sync")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--pattern", default="**/*.md", show_default=True, help="Glob of files to index.")
@click.option(
    "--follow-external-symlinks",
    is_flag=True,
    help="Also read files that symlinks lead to outside DIRECTORY.",
)
@json_option
@click.pass_context
def docs_sync(
    ctx: click.Context,
    directory: Path,
    pattern: str,
    follow_external_symlinks: bool,
    as_json: bool,
) -> None:
    """Index the files under DIRECTORY: new ones pending, changed ones stale,
    vanished ones flagged missing. Only regular files are read; FIFOs, devices,
    files over 16 MiB and symlinks leading outside DIRECTORY are listed as
    problems. Progress goes to stderr (not with --json)."""
    stderr = sys.stderr
    bar: ProgressBar[int] | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if as_json or total == 0:
            return
        if bar is None:
            bar = click.progressbar(length=total, label="syncing documents", file=stderr)
            bar.render_progress()
        bar.update(done - bar.pos)

    async def work(db: Database) -> SyncResult:
        return await db.documents.sync_directory(
            directory,
            pattern,
            progress=progress,
            follow_external_symlinks=follow_external_symlinks,
        )

    try:
        result = run_with_db(ctx, work)
    finally:
        if bar is not None:
            bar.render_finish()
    if as_json:
        click.echo(to_json(result.model_dump()))
    else:
        print_sync(result)


@docs_group.command("pending")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@click.pass_context
def docs_pending(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Documents waiting for an embedding (pending, then stale)."""
    rows = run_with_db(ctx, lambda db: db.documents.pending_documents(limit))

    def human(documents: list[Any]) -> None:
        if not documents:
            click.echo("no pending documents")
        for doc in documents:
            click.echo(f"{doc.id}  {doc.sync_status:<7}  {doc.title}  {doc.file_path}")

    emit(rows, as_json, human)
