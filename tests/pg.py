"""A real PostgreSQL with pgvector on a loopback port, for the tests and benchmarks.

The server is the one the ``pgserver`` package ships (PostgreSQL 16.2 with pgvector 0.6.2 built in;
installed by ``scripts/setup.sh`` through the ``test`` extra). :class:`LocalPostgres` runs its
``initdb`` and ``postgres`` binaries directly, so the server listens on 127.0.0.1 at a free port
(``pgserver``'s own start-up listens on a Unix socket only) and lives in a temporary folder that
is deleted when it stops. PostgreSQL refuses to run as root: as root, the cluster belongs to a
system user ``pgserver`` (created with ``useradd`` if missing, as ``pgserver`` itself does).

Durability settings (``fsync``, ``synchronous_commit``) are off: this is a throw-away test
cluster, and turning them off changes no result of a test, only its time.

    python tests/pg.py          # start one, print its URL, wait for Ctrl-C
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

__all__ = ["LocalPostgres", "PostgresUnavailable"]

SYSTEM_USER = "pgserver"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL could be started here (the reason says why)."""


def _binaries() -> Path:
    try:
        with warnings.catch_warnings():  # importing pgserver warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise PostgresUnavailable(f"the pgserver package is not installed ({exc}); run scripts/setup.sh") from exc
    return Path(POSTGRES_BIN_PATH)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """One PostgreSQL cluster in a temporary folder on 127.0.0.1; ``url(db)`` names a database in it."""

    def __init__(self, root: Path | None = None) -> None:
        self.bin = _binaries()
        self.root = Path(root or tempfile.mkdtemp(prefix="facespace-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._proc: subprocess.Popen | None = None
        self._user = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
            import stat

            self._user = SYSTEM_USER
            entry = ensure_user_exists(SYSTEM_USER)
            ensure_prefix_permissions(self.root)
            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(self.bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout,
                              user=self._user)

    def start(self) -> "LocalPostgres":
        made = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=utf8",
                         "--no-sync")
        if made.returncode:
            raise PostgresUnavailable(f"initdb failed: {made.stderr.strip()[-500:]}")
        log = open(self.root / "server.log", "w")
        if self._user:
            shutil.chown(self.root / "server.log", self._user)
        self._proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
             "-k", str(self.root), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, user=self._user)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self._proc.poll() is not None:
                raise PostgresUnavailable(f"postgres exited: {(self.root / 'server.log').read_text()[-800:]}")
            ready = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", timeout=10)
            if ready.returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise PostgresUnavailable("postgres did not become ready within 60 s")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database ``name``; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown: open sessions are ended
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    with LocalPostgres() as pg:
        print(pg.url(), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
