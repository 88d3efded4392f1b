"""The documentation stays true to the code.

Generated pages (``docs/api.md``, ``docs/schema.md``) must equal what
``abathur.cli.docgen`` produces now; every public method and property of the
documented classes needs a docstring; the hand-written guides must name what
the code has (namespace prefixes, audit actions, revisions, CLI commands).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest
from sqlalchemy import Column, ForeignKey, Index, Integer, MetaData, Table, Text, text

from abathur.cli import cli, docgen
from abathur.db import engine, errors, storage
from abathur.domain.memory import CONSOLIDATION_STRATEGIES
from abathur.domain.namespaces import PERSISTENT_PREFIXES
from abathur.schema.models import Base

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
VERSIONS = ROOT / "alembic" / "versions"
GUIDES = ("namespaces.md", "memory_versioning.md", "migrations.md", "troubleshooting.md")
FIX = "run `python -m abathur.cli.docgen` and commit the result"


def read(name: str) -> str:
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing"
    return path.read_text(encoding="utf-8")


def mermaid_block(markdown: str) -> str:
    match = re.search(r"```mermaid\n(.*?)```", markdown, re.DOTALL)
    assert match, "no ```mermaid block"
    return match.group(1)


def revision_ids() -> list[str]:
    """The ``revision = "..."`` of every file in alembic/versions."""
    ids = []
    for path in sorted(VERSIONS.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "revision" for t in node.targets)
                and isinstance(node.value, ast.Constant)
            ):
                ids.append(str(node.value.value))
    return ids


def audit_action_types() -> set[str]:
    """Every ``action_type="memory_..."`` the memory service writes."""
    source = (ROOT / "abathur" / "infrastructure" / "memory_service.py").read_text()
    return set(re.findall(r'action_type="(memory_\w+)"', source))


# ------------------------------------------------------------ generated pages


@pytest.mark.parametrize("name", [docgen.API_FILE, docgen.SCHEMA_FILE])
def test_generated_page_is_up_to_date(name: str) -> None:
    expected = docgen.generated()[name]
    assert read(name) == expected, f"docs/{name} is out of date: {FIX}"


def test_every_public_method_has_a_docstring() -> None:
    missing = docgen.undocumented_members()
    assert not missing, (
        "public methods/properties without a docstring (they appear as "
        f"'{docgen.MISSING_DOCSTRING}' in docs/api.md): {', '.join(missing)}"
    )


def test_api_reference_covers_every_public_method() -> None:
    api = read(docgen.API_FILE)
    for cls, _module in docgen.API_CLASSES:
        public = [
            name
            for klass in cls.__mro__[:-1]
            for name, value in vars(klass).items()
            if not name.startswith("_") and callable(getattr(cls, name, None))
        ]
        assert public, f"{cls.__name__} has no public methods?"
        for name in public:
            assert f"### `{cls.__name__}.{name}`" in api, f"{cls.__name__}.{name} not in api.md"


def test_api_reference_has_the_spec_methods_with_their_signatures() -> None:
    api = read(docgen.API_FILE)
    spec = {
        "SessionService": (
            "create_session", "get_session", "append_event", "update_status",
            "get_state", "set_state", "list_active_sessions", "terminate_session",
        ),
        "MemoryService": (
            "add_memory", "get_memory", "update_memory", "delete_memory",
            "search_memories", "get_memory_history", "consolidate_memories",
        ),
        "DocumentIndexService": ("sync_directory", "pending_documents", "mark_synced"),
        "Database": ("initialize", "close", "integrity_check", "validate_foreign_keys",
                     "explain_query_plan"),
    }  # fmt: skip
    for cls, methods in spec.items():
        for method in methods:
            heading = f"### `{cls}.{method}`\n\n```python\nasync def {method}("
            assert heading in api, f"{cls}.{method} missing or not shown as async in api.md"


def test_api_reference_lists_every_error() -> None:
    api = read(docgen.API_FILE)
    for error in docgen._error_classes():
        assert f"- `{error.__name__}`" in api
    assert "`NotFoundError` (also `ValueError`)" in api
    assert "`AccessDeniedError` (also `PermissionError`)" in api


def test_signature_rendering_keeps_keyword_only_markers_and_defaults() -> None:
    async def sample(self: object, a: int, b: str = "x", *, c: bool = False) -> None:
        """Doc."""

    rendered = docgen.signature("sample", sample, prefix="async def ", drop_first=True)
    assert rendered == "async def sample(a: int, b: str = 'x', *, c: bool = False) -> None"


# ------------------------------------------------------------ schema


def test_every_table_and_column_is_in_the_er_diagram() -> None:
    diagram = mermaid_block(read(docgen.SCHEMA_FILE))
    assert diagram.startswith("erDiagram\n")
    for table in Base.metadata.tables.values():
        entity = re.search(rf"^    {table.name} \{{\n(.*?)^    \}}", diagram, re.M | re.S)
        assert entity, f"table {table.name} missing from the ER diagram"
        body = entity.group(1)
        for column in table.columns:
            line = re.search(rf"^        (\w+) {column.name}\b(.*)$", body, re.M)
            assert line, f"{table.name}.{column.name} missing from the ER diagram"
            keys = line.group(2)
            assert ("PK" in keys) == column.primary_key, f"{table.name}.{column.name} PK"
            assert ("FK" in keys) == bool(column.foreign_keys), f"{table.name}.{column.name} FK"


def test_every_foreign_key_is_a_relationship_with_its_on_delete_rule() -> None:
    diagram = mermaid_block(read(docgen.SCHEMA_FILE))
    for table in Base.metadata.tables.values():
        for fk in table.foreign_keys:
            rule = fk.ondelete or "NO ACTION"
            pattern = (
                rf"^    {fk.column.table.name} \S+ {table.name} : "
                rf'"{fk.parent.name}, ON DELETE {rule}"$'
            )
            assert re.search(pattern, diagram, re.M), f"{table.name}.{fk.parent.name} -> {rule}"
    assert "ON DELETE SET NULL" in diagram and "ON DELETE CASCADE" in diagram


def test_every_index_is_in_the_index_table_with_its_where_clause() -> None:
    schema = read(docgen.SCHEMA_FILE)
    for table in Base.metadata.tables.values():
        for index in table.indexes:
            row = re.search(rf"^\| `{index.name}` \| {table.name} \|(.*)$", schema, re.M)
            assert row, f"index {index.name} missing from schema.md"
            where = index.dialect_options["sqlite"]["where"]
            if where is not None:
                assert str(where) in row.group(1), f"{index.name}: WHERE {where} not shown"


def test_schema_generator_follows_the_metadata() -> None:
    metadata = MetaData()
    parent = Table("parent", metadata, Column("id", Integer, primary_key=True))
    child = Table(
        "child",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("parent_id", Integer, ForeignKey("parent.id", ondelete="CASCADE")),
        Column("note", Text, nullable=True),
    )
    Index("idx_child_parent", child.c.parent_id, sqlite_where=text("note IS NOT NULL"))
    schema = docgen.schema_reference(metadata)
    assert "    parent {\n        Integer id PK\n    }" in schema
    assert '        Integer parent_id FK "nullable"' in schema
    assert f'    {parent.name} |o--o{{ child : "parent_id, ON DELETE CASCADE"' in schema
    assert "| `idx_child_parent` | child | parent_id |  | `note IS NOT NULL` (SQLite)" in schema
    assert "memory_entries" not in schema


# ------------------------------------------------------------ guides


def test_docs_index_links_every_page_and_every_link_resolves() -> None:
    index = read("README.md")
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    pages |= {"performance_validation_milestone2.md", *GUIDES, "api.md", "schema.md"}
    for page in sorted(pages):
        assert f"]({page})" in index, f"docs/README.md does not link {page}"
    for name in (*GUIDES, "README.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", read(name)):
            if target.startswith("performance_"):
                continue  # written by `make bench`, absent on a fresh clone
            assert (DOCS / target).resolve().is_file(), f"docs/{name} links missing {target}"


def test_namespace_guide_covers_the_scopes_and_matching_rules() -> None:
    guide = read("namespaces.md")
    for prefix in (*PERSISTENT_PREFIXES, "temp"):
        assert f"`{prefix}:`" in guide, f"namespaces.md does not mention {prefix}:"
    for phrase in (
        "never persisted",
        "`user:alice2`",
        "`user:alice:preferences`",
        "`%`",
        "`_`",
        "AccessContext",
        "can_write_app",
        "can_write_project",
        "AccessDeniedError",
        "PermissionError",
        "publish_memory",
    ):
        assert phrase in guide, f"namespaces.md does not mention {phrase}"


def test_versioning_guide_names_every_audit_action_and_strategy() -> None:
    guide = read("memory_versioning.md")
    actions = audit_action_types()
    assert {"memory_create", "memory_restore", "memory_expire"} <= actions
    for action in sorted(actions):
        assert action in guide, f"memory_versioning.md does not mention audit action {action}"
    for strategy in CONSOLIDATION_STRATEGIES:
        assert f"`{strategy}`" in guide, f"memory_versioning.md lacks strategy {strategy}"
    for phrase in ("is_deleted", "restore_memory", "expire_episodic", "get_memory_history"):
        assert phrase in guide, f"memory_versioning.md does not mention {phrase}"
    restore = re.search(r"`update` / `memory_restore`|'update'.{0,80}'memory_restore'", guide, re.S)
    assert restore, "memory_versioning.md must say restore is audited as 'update'/'memory_restore'"


def test_runbook_names_every_revision() -> None:
    runbook = read("migrations.md")
    ids = revision_ids()
    assert len(ids) >= 4 and "0001_milestone1_core" in ids
    for revision in ids:
        assert f"`{revision}`" in runbook, f"migrations.md does not describe revision {revision}"
    for phrase in (
        "alembic upgrade head",
        "alembic downgrade 0001_milestone1_core",
        "abathur db backup",
        "placeholder",
        "memory_entry_id",
        "foreign_keys=OFF",
        "pg_advisory_xact_lock",
    ):
        assert phrase in runbook, f"migrations.md does not mention {phrase}"


def test_troubleshooting_matches_the_database_settings() -> None:
    guide = read("troubleshooting.md")
    for pragma in engine.SQLITE_PRAGMAS:
        setting = pragma.removeprefix("PRAGMA ")
        assert f"`{setting}`" in guide, f"troubleshooting.md does not mention {setting}"
    assert f"up to {storage.RETRY_ATTEMPTS} attempts" in guide
    for code in sorted(errors.PG_RETRYABLE):
        assert code in guide
    for phrase in (
        "database is locked",
        "BEGIN IMMEDIATE",
        "json_valid",
        "JSONB",
        "NaN",
        "ValidationError",
        "postgresql+asyncpg://",
        "ABATHUR_DATABASE_URL",
        "search_path",
        "connect_args",
        "pool_pre_ping",
        "test_autogenerate_finds_no_drift",
    ):
        assert phrase in guide, f"troubleshooting.md does not mention {phrase}"


def test_cli_commands_named_in_the_docs_exist() -> None:
    """Every ``abathur GROUP COMMAND`` written in a guide is a real command."""
    mentioned: set[tuple[str, str]] = set()
    for name in (*GUIDES, "README.md"):
        mentioned |= set(re.findall(r"(?:`|^)abathur ([a-z]+) ([a-z]+)", read(name), re.M))
    assert ("db", "backup") in mentioned and ("db", "check") in mentioned
    for group_name, command_name in sorted(mentioned):
        group = cli.commands.get(group_name)
        assert isinstance(group, click.Group), f"`abathur {group_name}` is not a command group"
        assert command_name in group.commands, f"`abathur {group_name} {command_name}` not found"


def test_drift_test_named_in_troubleshooting_exists() -> None:
    source = (ROOT / "tests" / "migrations" / "test_migrations.py").read_text()
    for name in re.findall(r"test_migrations\.py::(\w+)|`(test_\w+)`", read("troubleshooting.md")):
        test = next(n for n in name if n)
        assert f"def {test}(" in source, f"troubleshooting.md names a missing test {test}"


def test_cli_options_in_the_readme_exist() -> None:
    """Every ``--option`` on an ``abathur GROUP ...`` line of the top README belongs to that group.

    (``read("README.md")`` is docs/README.md, the docs index; the command list is in the top one.)
    """
    checked = 0
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        found = re.match(r"\s*abathur ([a-z]+) ", line)
        if found is None or found.group(1) not in cli.commands:
            continue
        top = cli.commands[found.group(1)]
        commands = top.commands.values() if isinstance(top, click.Group) else [top]
        known = {
            opt
            for command in commands
            for param in command.params
            for opt in (*param.opts, *param.secondary_opts)
        }
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line.split("#")[0]):
            assert option in known, f"README: `abathur {found.group(1)} ... {option}` not found"
            checked += 1
    assert checked >= 10


def _readme_commands(text: str) -> list[tuple[str, str]]:
    """(group, command) of every command in the top README's command list, whose
    lines read ``abathur GROUP CMD ... | CMD2 ...  |  abathur GROUP2 CMD3 ...``."""
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        for part in re.split(r"\s+\|\s+(?=abathur )", line.split("#")[0].strip()):
            head = re.match(r"abathur ([a-z]+)(?: (.*))?$", part)
            if head is not None and head.group(2):
                found += [(head.group(1), alt.split()[0]) for alt in head.group(2).split(" | ")]
    return found


def test_cli_commands_in_the_readme_exist() -> None:
    """Every command of the top README's command list is a real command (the guides'
    test above reads docs/README.md, and only the first command of a line)."""
    mentioned = _readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert {("db", "backup"), ("memory", "sweep"), ("session", "show")} <= set(mentioned)
    for group_name, command_name in mentioned:
        group = cli.commands.get(group_name)
        assert isinstance(group, click.Group), f"README: `abathur {group_name}` is not a group"
        assert command_name in group.commands, f"README: `abathur {group_name} {command_name}`"
    misspelt = _readme_commands("    abathur memory search P | sweeep")
    assert ("memory", "sweeep") in misspelt  # the parser sees a misspelt alternative
