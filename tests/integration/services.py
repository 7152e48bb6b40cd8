"""Real services on loopback for integration tests: PostgreSQL and an S3-compatible store (moto).

PostgreSQL comes from the machine (``initdb``/``postgres`` on PATH or under
``/usr/lib/postgresql/<version>/bin``; Debian/Ubuntu: ``apt-get install postgresql``). It refuses
to run as root, so under uid 0 the cluster is created and run as the unprivileged ``postgres``
user (or ``nobody``) in a temporary folder that user owns. It listens on 127.0.0.1 only, with
its Unix socket in that folder, ``trust`` auth, and fsync off (a throwaway test cluster).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..processes import free_port, http_ok, stop_group, wait_until

PG_USER = "segops"  # the database superuser initdb creates (not an OS user)


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str

    def uri(self, dbname: str) -> str:
        """SQLAlchemy URI (what ``mlflow server --backend-store-uri`` takes). The driver is named:
        SQLAlchemy 2.1's default for plain ``postgresql://`` is psycopg 3, not psycopg2."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=dbname, connect_timeout=3)


def postgres_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _os_user() -> pwd.struct_passwd | None:
    """Who runs PostgreSQL: ourselves, or when we are root an unprivileged account."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    return None


@contextlib.contextmanager
def postgres_server(databases: tuple[str, ...] = ()) -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1:<free port> with ``databases`` created; removed after."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed: no initdb/postgres on PATH or in /usr/lib/postgresql/*/bin")
    user = _os_user()
    if user is None:
        pytest.skip("running as root and there is no 'postgres' or 'nobody' account to run PostgreSQL as")
    # not under pytest's tmp dir: that is mode 0700 root-owned, the postgres account cannot enter it
    root = Path(tempfile.mkdtemp(prefix="segops-pg-"))
    as_user = {} if os.geteuid() != 0 else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    proc = None
    try:
        os.chown(root, user.pw_uid, user.pw_gid)
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(root)}
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                PG_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            env=env,
            **as_user,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr[-2000:]}")
        port, log = free_port(), root / "postgres.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(root / "data"),
                    "-p",
                    str(port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(root),
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                **as_user,
            )
        server = Postgres("127.0.0.1", port, PG_USER)
        wait_until(lambda: _accepts(server), proc, "postgres", log, timeout=60)
        with contextlib.closing(server.connect()) as conn:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                for name in databases:
                    cur.execute(f'CREATE DATABASE "{name}"')
        yield server
    finally:
        if proc is not None:
            stop_group(proc, signal.SIGINT)  # SIGINT: "fast" shutdown (ends sessions, no waiting on clients)
        shutil.rmtree(root, ignore_errors=True)


def _accepts(server: Postgres) -> bool:
    import psycopg2

    try:
        server.connect().close()
        return True
    except psycopg2.OperationalError:
        return False


@dataclass(frozen=True)
class S3:
    endpoint: str
    env: dict[str, str]  # what a client (boto3, an MLflow server) needs to reach it

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )


@contextlib.contextmanager
def s3_server(log: Path, buckets: tuple[str, ...] = ()) -> Iterator[S3]:
    """moto's S3-compatible server on 127.0.0.1:<free port> (in memory) with ``buckets`` created."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{endpoint}/moto-api/"), proc, "moto server", log, timeout=60)
        s3 = S3(
            endpoint,
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "MLFLOW_S3_ENDPOINT_URL": endpoint,
            },
        )
        for bucket in buckets:
            s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        stop_group(proc)
