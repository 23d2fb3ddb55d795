"""The bare baselines: what Flask, psycopg2, Celery and Redis cost without agentq.

- ``POST /jobs``: INSERT one row, COMMIT, ``apply_async`` one task: the floor of a job
  submission on this stack.
- ``POST /checkpoints/<id>``: a guarded UPDATE, COMMIT, ``apply_async`` of ``bare.stamp``:
  the floor of an approval that dispatches work.
- Celery tasks ``bare.noop`` and ``bare.done`` (chains of no-ops; the last one counts itself
  in Redis so the client sees the chain finish) and ``bare.stamp`` (writes the time it
  started to Redis).

The web app runs under the same gunicorn settings as agentq
(``app.observability.gunicorn_conf``), the
tasks under the same Celery settings (``app.config.celery_settings``) on a queue of
their own. The web app reads ``DATABASE_URL`` and ``REDIS_URL``.
"""

from __future__ import annotations

import os
import threading
import time

import psycopg2
import redis as redis_py
from celery import Celery
from flask import Flask
from flask import jsonify
from flask import request
from kombu import Queue
from psycopg2.extras import Json

from app.config import MAX_PRIORITY
from app.config import celery_settings

QUEUE = "bare"

_TABLES = """
CREATE TABLE IF NOT EXISTS bare_jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS bare_checkpoints (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    status text NOT NULL DEFAULT 'PENDING',
    decided_at timestamptz
);
"""


def create_tables(database_url: str) -> None:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(_TABLES)
    conn.close()


def _celery() -> Celery:
    settings = celery_settings(os.environ["REDIS_URL"], lease_seconds=30, sweep_interval=2.0)
    settings.update(
        task_default_queue=QUEUE,
        task_queues=[Queue(QUEUE)],
        task_routes={},
        beat_schedule={},
    )
    app = Celery("bare")
    app.config_from_object(settings)
    return app


celery = _celery()
_local = threading.local()


def _redis() -> redis_py.Redis:
    if getattr(_local, "redis", None) is None:
        _local.redis = redis_py.Redis.from_url(os.environ["REDIS_URL"])
    return _local.redis


@celery.task(name="bare.noop", ignore_result=True)
def noop() -> None:
    pass


@celery.task(name="bare.done", ignore_result=True)
def done(counter: str) -> None:
    _redis().incr(counter)


@celery.task(name="bare.stamp", ignore_result=True)
def stamp(key: str) -> None:
    _redis().set(key, repr(time.time()))


def chain_of(length: int, counter: str):
    """``length`` no-op tasks, the last of which counts itself under ``counter``."""
    from celery import chain

    sigs = [noop.si() for _ in range(length - 1)] + [done.si(counter)]
    return chain(*sigs)


def _connection():
    if getattr(_local, "conn", None) is None or _local.conn.closed:
        _local.conn = psycopg2.connect(os.environ["DATABASE_URL"])
    return _local.conn


def create_app() -> Flask:
    app = Flask("bare")

    @app.get("/api/health")
    def health():
        return jsonify(ok=True)

    @app.post("/jobs")
    def submit():
        body = request.get_json()
        conn = _connection()
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO bare_jobs (payload) VALUES (%s) RETURNING id, created_at",
                [Json(body)],
            )
            job_id, created_at = cur.fetchone()
        conn.commit()
        noop.apply_async(priority=MAX_PRIORITY - body.get("priority", 5))
        return jsonify(id=job_id, createdAt=created_at.isoformat()), 201

    @app.post("/checkpoints/<checkpoint_id>")
    def approve(checkpoint_id: str):
        conn = _connection()
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE bare_checkpoints SET status = 'APPROVED', decided_at = clock_timestamp() "
                "WHERE id = %s AND status = 'PENDING' RETURNING id",
                [checkpoint_id],
            )
            found = cur.fetchone()
        conn.commit()
        if found is None:
            return jsonify(error="already decided"), 409
        stamp.apply_async((checkpoint_id,))
        return jsonify(id=checkpoint_id, status="APPROVED")

    return app
