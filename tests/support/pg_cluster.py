"""A private PostgreSQL cluster for tests that stop and restart the server.

It lives in a temporary directory and listens on a free port of its own, with
trust authentication on 127.0.0.1 only: the shared server of the suite (and
any other) is never touched. The server binaries come from ``pg_config
--bindir``; where they are absent ``start()`` skips the test. PostgreSQL
refuses to run as root, so under root the cluster runs as the ``postgres``
user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    bindir = Path(out.stdout.strip())
    if out.returncode != 0 or not all((bindir / b).exists() for b in ("initdb", "pg_ctl")):
        return None
    return bindir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateCluster:
    """``initdb`` + ``pg_ctl`` in a temporary directory; ``url`` names its
    ``postgres`` database through asyncpg."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            pytest.skip("PostgreSQL server binaries (pg_config --bindir) are not installed")
        self._bindir = bindir
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run a cluster")
        self.root = Path(tempfile.mkdtemp(prefix="abathur-pg-"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)

    def _run(self, *argv: str) -> None:
        command = [str(self._bindir / argv[0]), *argv[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user.pw_name, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr}{done.stdout}")

    def _pg_ctl(self, *argv: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c max_connections=40"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, *argv
        )

    def start(self) -> PrivateCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self._pg_ctl("-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: every session is ended with admin_shutdown)."""
        self._pg_ctl("-w", "-m", mode, "stop")

    def resume(self) -> None:
        self._pg_ctl("-w", "start")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # it was not running
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
