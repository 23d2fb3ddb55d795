"""The Celery side of agentq: ``celery -A worker worker`` and ``celery -A worker beat``
(what ``agentq worker`` and ``agentq beat`` run).

``worker.celery`` is built on first access (PEP 562): importing a module of this package
(the tests read ``worker.transport``) builds no app; Celery's ``-A worker`` asks for it.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "celery":
        # Here, not at the top: building the worker's app is what this attribute is for.
        from worker.celery_app import worker_celery

        return worker_celery()
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
