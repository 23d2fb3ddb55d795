"""The Celery side of agentq: ``celery -A worker worker`` and ``celery -A worker beat``.

``worker.celery`` is built on first access (PEP 562), so the web process can import
``worker.outbox`` without building a worker app.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "celery":
        from worker.celery_app import worker_celery

        return worker_celery()
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
