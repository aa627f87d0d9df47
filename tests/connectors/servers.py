"""Real servers for the connector tests: a throwaway PostgreSQL cluster and Azurite.

Both run detached (reparented away from the test process, so the leak check on child
processes holds), on free loopback ports, in temp directories removed at the end. Anything
missing is a skip with the reason, or a failure when ``CI`` is set: CI installs them
(``tests/connectors/install_servers.sh``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def unavailable(reason: str) -> None:
    """Skip the test, or fail it on CI, where every server must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see tests/connectors/install_servers.sh)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, seconds: float, alive: Callable[[], bool] = lambda: True) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and alive():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


# -- PostgreSQL ------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _server_user() -> str | None:
    """The unprivileged user to run the server as when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    unavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")
    return None


@dataclass(frozen=True)
class Postgres:
    """A running throwaway cluster: superuser ``aw`` with ``password``, over TCP on
    ``port`` (password auth) and a Unix socket in ``socket_dir`` (trust)."""

    port: int
    password: str
    socket_dir: str
    data_dir: str

    @property
    def dsn(self) -> str:
        return f"postgresql://aw:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def socket_dsn(self) -> str:
        return f"host={self.socket_dir} port={self.port} user=aw dbname=postgres"


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    return argv if user is None else ["runuser", "-u", user, "--", *argv]


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """Start a PostgreSQL cluster for the tests; stop it and remove its files at the end."""
    bindir = _pg_bin()
    if bindir is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
        return
    user = _server_user()
    base = tempfile.mkdtemp(prefix="aw-pg-")
    os.chmod(base, 0o755)
    data, sockets = os.path.join(base, "data"), os.path.join(base, "sock")
    os.mkdir(sockets)
    password = "pw-" + secrets.token_hex(12)
    pwfile = os.path.join(base, "pw")
    Path(pwfile).write_text(password + "\n")
    if user is not None:
        info = pwd.getpwnam(user)
        for path in (base, sockets, pwfile):
            os.chown(path, info.pw_uid, info.pw_gid)
    port = free_port()
    try:
        _initdb(bindir, user, data, pwfile)
        _start(bindir, user, data, sockets, port, base)
        yield Postgres(port, password, sockets, data)
    finally:
        subprocess.run(
            _as_user(user, [str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


def _initdb(bindir: Path, user: str | None, data: str, pwfile: str) -> None:
    argv = [str(bindir / "initdb"), "-D", data, "-U", "aw", f"--pwfile={pwfile}"]
    argv += ["--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8"]
    _run(_as_user(user, [*argv, "--locale=C.UTF-8"]), "initdb")


def _start(bindir: Path, user: str | None, data: str, sockets: str, port: int, base: str) -> None:
    # Durability off: a test cluster that dies is thrown away, and COPY runs much faster.
    options = (
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60 "
        "-c wal_level=minimal -c max_wal_senders=0 -c shared_buffers=128MB"
    )
    log = os.path.join(base, "server.log")
    argv = [str(bindir / "pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"]
    _run(_as_user(user, argv), "pg_ctl start")


# -- Azurite ---------------------------------------------------------------------------------


AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
"""Azurite's fixed, public development account (documented by Microsoft; not a secret)."""


def _azurite_bin() -> str | None:
    candidates = [
        os.environ.get("AZURITE_BLOB", ""),
        str(ROOT / ".azurite" / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob") or "",
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@dataclass(frozen=True)
class Azurite:
    port: int

    @property
    def connection_string(self) -> str:
        endpoint = f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
        )


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


@contextlib.contextmanager
def azurite_server() -> Iterator[Azurite]:
    """Start Azurite's blob service detached; stop it and remove its files at the end."""
    binary = _azurite_bin()
    if binary is None:
        unavailable(
            "Azurite not found: npm install --prefix .azurite azurite (or set AZURITE_BLOB)"
        )
        return
    base = tempfile.mkdtemp(prefix="aw-azurite-")
    port = free_port()
    argv = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port)]
    argv += ["--loose", "--skipApiVersionCheck", "--inMemoryPersistence", "--silent"]
    # Started by a shell that exits at once: the server is nobody's child here.
    script = " ".join(f"'{a}'" for a in argv) + f" > '{base}/log' 2>&1 & echo $!"
    out = subprocess.run(["sh", "-c", script], cwd=base, capture_output=True, text=True, check=True)
    pid = int(out.stdout.strip())
    try:
        if not _wait_port(port, 30, alive=lambda: not _gone(pid)):
            log = Path(base, "log").read_text(errors="replace")
            pytest.fail(f"Azurite did not start listening on {port}:\n{log}")
        yield Azurite(port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
