"""A throw-away PostgreSQL cluster for tests (not a test module): Debian's binaries, a temp folder, a free port on
127.0.0.1, removed afterwards. initdb and postgres refuse to run as root, so as root they run as ``postgres``."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import UNDER_CI


def postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    bindir = postgres_bindir()
    if bindir is None:
        if UNDER_CI:
            pytest.fail("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin; .ci/run installs Debian's "
                        "postgresql package as root")
        pytest.skip("PostgreSQL is not installed here (Debian: apt-get install postgresql); CI runs this test")
    root = Path(tempfile.mkdtemp(prefix="kdvision-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*command: str | Path) -> None:
        done = subprocess.run([*as_user, *map(str, command)], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")

    started = False
    try:
        run(bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        run(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-t", "60",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        started = True
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "kdsweep")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/kdsweep"
    finally:
        if started:
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
