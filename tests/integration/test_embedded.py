"""Tests for app.dev.embedded: real Postgres/Redis subprocesses, real data on disk."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import psycopg2
import pytest
import redis

from app.dev.embedded import EmbeddedPostgres
from app.dev.embedded import EmbeddedRedis
from app.dev.embedded import free_port

pytestmark = [pytest.mark.integration]


def _procs_mentioning(path: Path) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line mentions ``path``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(str(path) in arg for arg in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def _alive(pids: list[int]) -> list[int]:
    """The subset of ``pids`` that still run (zombies count as gone)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_postgres_data_survives_restart(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", durable=False)
    assert pg.url == f"postgresql://postgres@127.0.0.1:{pg.port}/agentq"

    assert pg.start() == pg.url
    assert pg.is_running()
    with psycopg2.connect(pg.url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        cur.execute("INSERT INTO t VALUES (1, 'héllo')")
    conn.close()

    # The postmaster and all its children (backends, checkpointer, ...).
    postmaster = psutil.Process(int((pg.pgdata / "postmaster.pid").read_text().split()[0]))
    server_pids = [postmaster.pid, *(c.pid for c in postmaster.children(recursive=True))]
    assert len(server_pids) > 1

    pg.stop()
    assert not pg.is_running()
    assert _alive(server_pids) == []
    assert _procs_mentioning(pg.datadir) == []
    assert not _port_answers(pg.port)
    pg.stop()  # idempotent

    # Warm start on the same data directory: no initdb, the row is back.
    with pg:
        with psycopg2.connect(pg.url) as conn, conn.cursor() as cur:
            cur.execute("SELECT name FROM t WHERE id = 1")
            assert cur.fetchone() == ("héllo",)
        conn.close()
    assert _procs_mentioning(pg.datadir) == []

    # Layout documented in the module docstring.
    assert (pg.datadir / "pgdata" / "PG_VERSION").exists()
    assert (pg.datadir / "postgres.log").stat().st_size > 0


def test_postgres_refuses_second_server_on_same_datadir(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg", durable=False, database="other db") as pg:
        with psycopg2.connect(pg.url) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            assert cur.fetchone() == ("other db",)
        conn.close()
        with pytest.raises(RuntimeError, match=r"already running.*pid"):
            EmbeddedPostgres(tmp_path / "pg").start()
        assert pg.is_running()


def test_postgres_start_failure_includes_log(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        pg = EmbeddedPostgres(tmp_path / "pg", port=blocker.getsockname()[1], durable=False)
        with pytest.raises(RuntimeError, match=r"(?s)failed to start.*postgres.log"):
            pg.start()
    assert not pg.is_running()
    assert _procs_mentioning(pg.datadir) == []


def test_redis_aof_survives_restart_on_same_port(tmp_path: Path) -> None:
    rd = EmbeddedRedis(tmp_path / "redis")
    assert rd.start() == rd.url == f"redis://127.0.0.1:{rd.port}/0"
    client = redis.Redis.from_url(rd.url)
    client.set("k", "v")
    pid = client.info("server")["process_id"]
    client.close()

    rd.stop()
    assert not rd.is_running()
    assert not _port_answers(rd.port)
    assert _alive([pid]) == []
    assert _procs_mentioning(rd.datadir) == []
    rd.stop()  # idempotent

    # Same port, same dir: the broker comes back with its data.
    with rd:
        client = redis.Redis.from_url(rd.url)
        assert client.get("k") == b"v"
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()
    assert _procs_mentioning(rd.datadir) == []
    assert (rd.datadir / "redis.log").exists()


def test_redis_refuses_second_server_on_same_dir(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as rd:
        with pytest.raises(RuntimeError, match=r"already running.*pid"):
            EmbeddedRedis(tmp_path / "redis").start()
        assert rd.is_running()


def test_redis_port_in_use_fails_fast(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "a") as first:
        other = EmbeddedRedis(tmp_path / "b", port=first.port)
        with pytest.raises(RuntimeError, match=r"(?s)exited.*redis.log"):
            other.start()
        assert not other.is_running()
        assert first.is_running()
