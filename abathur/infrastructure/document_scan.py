"""Reading the files of a synced directory, before the index is touched.

Only regular files are read, and only up to a size limit: a FIFO would block
the read forever, a device such as ``/dev/zero`` never ends. A symlink whose
target lies outside the synced directory is not followed unless the caller
asks for it. Everything skipped becomes a ``SyncProblem`` naming the file and
the reason; nothing here raises for a file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from abathur.domain.documents import ScannedDocument, SyncProblem
from abathur.domain.values import MAX_ID_BYTES, brief_repr, check_text
from abathur.errors import AccessDeniedError, NotFoundError, ValidationError

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""The largest file a sync reads (16 MiB): a document, not a data dump."""
MAX_PATH_BYTES = 2048
"""The longest ``file_path`` (UTF-8 bytes) indexed: it must fit one entry of
the unique btree index on PostgreSQL (2704 bytes)."""
READ_CHUNK = 1024 * 1024

_FRONT_MATTER_FIELD = re.compile(r"^([A-Za-z_][\w-]*)\s*:\s*(.*?)\s*$")
_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$")
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_front_matter(text: str) -> tuple[dict[str, str], str]:
    """The ``key: value`` fields of a leading ``---`` block, and the text after it.

    Only flat scalar fields are read (YAML-ish, no YAML library): nested or
    list values are ignored, quotes around a value are removed.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text
    fields: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            return fields, "\n".join(lines[number + 1 :])
        match = _FRONT_MATTER_FIELD.match(line)
        if match and match.group(2):
            fields.setdefault(match.group(1).lower(), _unquote(match.group(2)))
    return {}, text  # no closing fence: not front matter after all


def first_heading(text: str) -> str | None:
    """The text of the first level-1 ATX heading (``# Title``) outside code fences."""
    fenced = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            match = _HEADING.match(stripped)
            if match:
                return match.group(1)
    return None


def describe(path: Path, text: str) -> tuple[str, str | None]:
    """(title, document_type) of a document: front matter ``title:`` or the
    first ``# `` heading or the file name without extension; ``type:`` or
    ``document_type:`` from front matter, else None."""
    fields, body = parse_front_matter(text)
    title = fields.get("title") or first_heading(body) or path.stem or path.name
    document_type = fields.get("document_type") or fields.get("type") or None
    return title, document_type


def shown(path: Path) -> str:
    """``path`` as text that any output can hold: bytes of a file name that
    are not UTF-8 (``os`` decodes them as lone surrogates) as ``\\x..``."""
    return path.as_posix().encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _read_regular(path: Path, max_bytes: int) -> bytes | str:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``,
    else the reason it is not read. Opened without blocking (a FIFO opens at
    once) and judged by ``fstat`` of what was opened, so that the file cannot
    be swapped between the check and the read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ENOENT and path.is_symlink():
            return "unreadable: dangling symlink"
        return f"unreadable: {exc.strerror or exc}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
            return f"unreadable: not a regular file ({kind})"
        if info.st_size > max_bytes:
            return f"skipped: {info.st_size} bytes, larger than the limit of {max_bytes}"
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(READ_CHUNK, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:  # it grew while being read
            return f"skipped: more than the limit of {max_bytes} bytes"
        return b"".join(chunks)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    finally:
        os.close(fd)


def _outside(path: Path, root: Path) -> Path | str | None:
    """Where ``path`` really leads when that is outside ``root`` (a symlink,
    of the file or of a directory on the way); None when it stays inside; the
    reason when it cannot be resolved."""
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        return "unreadable: dangling symlink"
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        return f"unreadable: {getattr(exc, 'strerror', None) or exc}"
    return None if real.is_relative_to(root) else real


def scan_file(
    path: Path,
    root: Path | None = None,
    *,
    follow_external_symlinks: bool = False,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> ScannedDocument | SyncProblem:
    """Read one file: its hash, title and type, or the reason it is not indexed.

    With ``root``, a file that resolves outside ``root`` is skipped unless
    ``follow_external_symlinks``.
    """
    file_path = shown(path)
    try:
        size = len(path.as_posix().encode("utf-8"))
    except UnicodeEncodeError:
        return SyncProblem(file_path=file_path, reason="skipped: file name is not valid UTF-8")
    if size > MAX_PATH_BYTES:
        return SyncProblem(
            file_path=file_path,
            reason=f"skipped: path is {size} bytes long in UTF-8; the limit is {MAX_PATH_BYTES}",
        )
    if root is not None:
        outside = _outside(path, root)
        if isinstance(outside, str):
            return SyncProblem(file_path=file_path, reason=outside)
        if outside is not None and not follow_external_symlinks:
            return SyncProblem(
                file_path=file_path,
                reason=f"skipped: symlink to {shown(outside)}, outside the synced directory "
                "(follow_external_symlinks=True follows it)",
            )
    data = _read_regular(path, max_bytes)
    if isinstance(data, str):
        return SyncProblem(file_path=file_path, reason=data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return SyncProblem(file_path=file_path, reason=f"not valid UTF-8 (byte {exc.start})")
    if "\x00" in text:
        return SyncProblem(file_path=file_path, reason="not text: contains a NUL character")
    title, document_type = describe(path, text.removeprefix("\ufeff"))
    if document_type is not None and len(document_type.encode("utf-8")) > MAX_ID_BYTES:
        return SyncProblem(
            file_path=file_path,
            reason=f"skipped: front matter type is longer than {MAX_ID_BYTES} bytes",
        )
    return ScannedDocument(
        file_path=file_path,
        title=title,
        document_type=document_type,
        content_hash=hashlib.sha256(data).hexdigest(),
    )


def scan_batch(
    paths: Sequence[Path],
    root: Path | None = None,
    *,
    follow_external_symlinks: bool = False,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> list[ScannedDocument | SyncProblem]:
    """``scan_file`` of each path, in order (run in a worker thread)."""
    return [
        scan_file(p, root, follow_external_symlinks=follow_external_symlinks, max_bytes=max_bytes)
        for p in paths
    ]


def check_pattern(pattern: Any) -> str:
    """A glob relative to the synced directory that cannot leave it."""
    if not isinstance(pattern, str) or not pattern:
        raise ValidationError(f"pattern must be a non-empty glob, not {brief_repr(pattern)}")
    check_text(pattern, "pattern", max_bytes=None)
    parts = PurePath(pattern).parts
    if PurePath(pattern).is_absolute() or ".." in parts:
        raise ValidationError(
            f"pattern {pattern!r} must stay inside the directory: no absolute path, no '..'"
        )
    if not parts:  # "." or "./": pathlib's glob of nothing fails (IndexError on 3.11)
        raise ValidationError(f"pattern {pattern!r} names no file: give a glob such as '**/*.md'")
    return pattern


def check_directory(path: Any) -> Path:
    """A directory argument (``str`` or ``os.PathLike``) as a ``Path``, unresolved."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes) or not isinstance(path, str):
        raise ValidationError(f"directory must be a str or a path, not {type(path).__name__}")
    check_text(path, "directory", max_bytes=None)
    return Path(path)


def resolve_directory(path: Path) -> Path:
    """The directory, resolved; NotFoundError unless it is one."""
    try:
        root = path.expanduser().resolve()
        is_dir = root.is_dir()
    except (OSError, RuntimeError) as exc:
        raise NotFoundError(f"directory {str(path)!r} cannot be resolved: {exc}") from exc
    if not is_dir:
        raise NotFoundError(f"directory {str(path)!r} not found")
    return root


def list_files(root: Path, pattern: str) -> list[Path]:
    """The paths under ``root`` matching ``pattern``, sorted."""
    try:
        return sorted(root.glob(pattern))
    except ValueError as exc:  # e.g. "'**' can only be an entire path component"
        raise ValidationError(f"pattern {brief_repr(pattern)} is not a valid glob: {exc}") from exc
    except PermissionError as exc:
        raise AccessDeniedError(f"cannot list {root.as_posix()!r}: {exc.strerror}") from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise ValidationError(
                f"pattern {brief_repr(pattern)} names a path longer than the file system allows"
            ) from exc
        raise NotFoundError(f"cannot list {root.as_posix()!r}: {exc.strerror or exc}") from exc
