"""A throwaway PostgreSQL server for the store's tests: Debian's `postgresql` package (initdb and
pg_ctl from /usr/lib/postgresql/<version>/bin, which `.ci/run` installs with apt when missing).

`pg_url` (session): a cluster initialised by initdb in a temp dir, started by pg_ctl on 127.0.0.1 on a
free port (trust auth, fsync off), stopped and deleted after the session. PostgreSQL refuses to run
as root: as root, initdb and pg_ctl run as the `postgres` user (`runuser -u postgres`), in a temp dir
owned by it. `store_url` (per test, parametrized "sqlite" / "postgresql"): a fresh SQLite file, or a
fresh database created in that cluster (dropped after the test).

Without PostgreSQL (or psycopg), the PostgreSQL cases skip with the reason, except in CI (CI=true, set
by .ci/run), where they fail."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

SUPERUSER = "segbench"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str):
    reason = f"PostgreSQL tests: {reason}"
    if _in_ci():
        pytest.fail(reason + " (CI=true: install Debian's postgresql, as .ci/run does)", pytrace=False)
    pytest.skip(reason + " (apt-get install postgresql, or PG_BINDIR=/path/to/bin)")


def find_bindir() -> Path | None:
    """PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else the folder of `initdb` on PATH."""
    def version(d):
        try:
            return int(Path(d).parent.name)
        except ValueError:
            return -1
    candidates = [os.environ["PG_BINDIR"]] if os.environ.get("PG_BINDIR") else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    for d in candidates:
        if all(os.access(Path(d) / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.as_user = None
        self.dir = Path(tempfile.mkdtemp(prefix="segbench-pg-"))
        if os.geteuid() == 0:  # initdb/postgres refuse root: run them as `postgres`, in a folder it owns
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no `postgres` user to run the server as") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = "postgres"
        self.data, self.log = self.dir / "data", self.dir / "server.log"
        self.port = None

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{log}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                  "--no-locale", "--no-sync")
        for attempt in range(3):  # the free port can be taken before the server binds it: try another
            self.port = _free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                    f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def stop(self) -> None:
        try:
            if self.port is not None:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"


def _admin(url: str, sql: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE) on the server of `url`."""
    from sqlalchemy import create_engine, text

    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as c:
            c.execute(text(sql))
    finally:
        eng.dispose()


def create_database(pg_url: str) -> str:
    """A new empty database in the cluster of `pg_url`; returns its URL."""
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(pg_url, f'CREATE DATABASE "{name}" TEMPLATE template0')
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)


def drop_database(pg_url: str, url: str) -> None:
    from sqlalchemy.engine import make_url

    _admin(pg_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url():
    """postgresql+psycopg://segbench@127.0.0.1:PORT/segbench of a throwaway cluster (this session only)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -r requirements.txt)")
    bindir = find_bindir()
    if bindir is None:
        _unavailable("no initdb/pg_ctl/postgres in /usr/lib/postgresql/*/bin or on PATH")
    cluster = Cluster(bindir)
    try:
        cluster.start()
        _admin(cluster.url("postgres"), f"CREATE DATABASE {SUPERUSER} TEMPLATE template0")
    except Exception as e:
        cluster.stop()
        if _in_ci():
            raise
        _unavailable(f"could not start a server with {bindir}: {e}")
    try:
        yield cluster.url(SUPERUSER)
    finally:
        cluster.stop()


@pytest.fixture
def pg_database(pg_url):
    """URL of a fresh, empty PostgreSQL database (dropped after the test)."""
    url = create_database(pg_url)
    yield url
    drop_database(pg_url, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """URL of a fresh, empty results store: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
    else:
        yield request.getfixturevalue("pg_database")
