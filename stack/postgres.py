"""A throwaway PostgreSQL on loopback: the local Prefect server's database.

Prefect on SQLite answers 503 ("database is locked") as soon as a flow, its worker and the
server's own services write at once, and its client then waits 2 s before retrying; on
PostgreSQL, as in production, it does not. The cluster lives in the stack's directory, runs
without fsync (its data is thrown away with the stack) and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from stack.processes import StackError, ensure_port_free, start, wait_until

USER = "prefect"
DATABASE = "prefect"


def postgres_bin() -> Path:
    """The directory of Debian's PostgreSQL server binaries (the newest installed)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not versions:
        raise StackError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres); "
            "`make setup` installs Debian's postgresql"
        )
    return versions[-1].parent


def database_url(port: int) -> str:
    """The SQLAlchemy URL Prefect uses for this database."""
    return f"postgresql+asyncpg://{USER}@127.0.0.1:{port}/{DATABASE}"


def start_postgres(data_dir: Path, port: int, log_path: Path, timeout: float = 60) -> int:
    """Create a cluster in `data_dir`, start it on 127.0.0.1:`port`, create the database."""
    ensure_port_free(port, "PostgreSQL")
    binaries = postgres_bin()
    # PostgreSQL refuses to run as root: run it as Debian's postgres user then.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres", "postgres")
    initdb_argv = [*as_user, str(binaries / "initdb"), "-D", str(data_dir), "-U", USER]
    initdb = subprocess.run(
        [*initdb_argv, "--auth=trust", "--encoding=UTF8", "--no-sync"],
        capture_output=True,
        text=True,
    )
    if initdb.returncode != 0:
        raise StackError(f"initdb {data_dir} failed:\n{initdb.stderr[-2000:]}")
    settings = [
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
        "max_connections=200",
    ]
    argv = [
        *as_user,
        str(binaries / "postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
        "-k",
        str(data_dir),
        *[arg for setting in settings for arg in ("-c", setting)],
    ]
    pid = start("PostgreSQL", argv, log_path)
    createdb = [
        str(binaries / "createdb"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        USER,
        DATABASE,
    ]
    wait_until(
        "PostgreSQL",
        lambda: subprocess.run(createdb, capture_output=True).returncode == 0,
        timeout,
        pid=pid,
        log_path=log_path,
    )
    return pid
