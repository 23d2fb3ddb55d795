"""Rate limits, counted in Redis (flask-limiter, fixed windows; on RabbitMQ with no Redis, in
each web process: ``storage_uri``) and set in ``app.config``:

- ``RATE_LIMIT_JOBS``: job submissions (``POST /api/agent-jobs``) per API token;
- ``RATE_LIMIT_DECISIONS``: approvals and rejections, together, per API token on the API
  and per admin on the admin pages;
- ``LOGIN_RATE_LIMIT``: admin sign-in attempts per user name and, apart, per client
  address, whether they succeed or not.

A request over a limit is stopped by flask-limiter's ``RateLimitExceeded``, a 429 that
``app.api`` answers with ``Retry-After`` in the error envelope (or in the admin pages'
layout), and the sign-in form with the form itself (``app.admin.auth``).

The API's limits are keyed by the hash of the request's bearer token, not by its user:
submissions and decisions check their token inside their own statement
(``login_required(in_statement=True)``), so when the limit is checked, before that
statement, nobody has said whose token it is yet, and asking Postgres would cost the hot
path a statement. A token belongs to one user and only the CLI makes tokens, so a token's
key is its user's key (a user given several tokens gets the limit once per token). A token
that turns out unknown is counted too, under its own key; it is answered 401 until its
limit is spent.

Each limited request costs one Redis round trip (a script that increments and sets the
window's expiry), and nothing else: the ``X-RateLimit-*`` headers are off
(``RATELIMIT_HEADERS_ENABLED``), because they read the window back from Redis on every
answer; only a 429 reads it, for its ``Retry-After``. When Redis does not answer, the
request goes through unlimited and the error is logged (``RATELIMIT_SWALLOW_ERRORS``):
a job is still accepted while Redis is down (DESIGN, guarantee 1).
"""

from __future__ import annotations

import hashlib
import time

from flask import Flask
from flask import current_app
from flask import g
from flask import request
from flask_login import current_user
from limits import parse_many

from app.config import is_amqp
from app.errors import ConfigError
from app.extensions import limiter

#: The settings that hold a limit, each in flask-limiter's syntax ("" for none).
SETTINGS = ("RATE_LIMIT_JOBS", "RATE_LIMIT_DECISIONS", "LOGIN_RATE_LIMIT")


def _setting(name: str):
    """The limit as the app is configured when the request comes (tests change it)."""
    return lambda: current_app.config[name]


def _token() -> str:
    return f"token:{g.token_hash}"


def _admin() -> str:
    return f"user:{current_user.id}"


def _login_name() -> str:
    # Hashed: the name is whatever the form sent, up to the body limit.
    name = request.form.get("name", "")
    return f"name:{hashlib.sha256(name.encode()).hexdigest()}"


def _address() -> str:
    return f"ip:{request.remote_addr}"


#: ``POST /api/agent-jobs``, below ``login_required(in_statement=True)``.
submissions = limiter.shared_limit(
    _setting("RATE_LIMIT_JOBS"),
    "jobs",
    key_func=_token,
    error_message="Too many job submissions with this token",
)
#: The API's approve and reject, below ``login_required(admin=True, in_statement=True)``.
api_decisions = limiter.shared_limit(
    _setting("RATE_LIMIT_DECISIONS"),
    "decisions",
    key_func=_token,
    error_message="Too many decisions with this token",
)
#: The admin pages' approve and reject forms, below ``admin_required``.
page_decisions = limiter.shared_limit(
    _setting("RATE_LIMIT_DECISIONS"),
    "decisions",
    key_func=_admin,
    error_message="Too many decisions",
)
#: The sign-in form's POSTs, per user name.
logins_per_name = limiter.limit(
    _setting("LOGIN_RATE_LIMIT"), key_func=_login_name, methods=["POST"]
)
#: The sign-in form's POSTs, per client address (``PROXY_FIX_HOPS`` behind a proxy).
logins_per_address = limiter.limit(
    _setting("LOGIN_RATE_LIMIT"), key_func=_address, methods=["POST"]
)


def breached() -> tuple[str, int]:
    """The limit this request went over (``"10 per 1 minute"``), and the seconds until its
    window ends (at least 1); read from Redis."""
    limit = limiter.current_limit
    return str(limit.limit), max(1, int(limit.reset_at - time.time()))


def storage_uri(config) -> str:
    """Where the counts live: ``REDIS_URL``'s Redis, or the broker when it is Redis; on
    RabbitMQ with no ``REDIS_URL``, each process's memory (``memory://``), so that a limit
    holds per web process rather than across them: RabbitMQ holds no counters, and counting
    in Postgres would cost every limited request a statement."""
    if config.get("REDIS_URL"):
        return config["REDIS_URL"]
    if not is_amqp(config["BROKER_URL"]):
        return config["BROKER_URL"]
    return "memory://"


def init_app(app: Flask) -> None:
    """Count the limits in Redis (``storage_uri``).

    :raises ConfigError: when a limit setting is not in flask-limiter's syntax.
    """
    for name in SETTINGS:
        value = app.config[name]
        try:
            if value:
                parse_many(value)
        except ValueError:
            raise ConfigError(
                f"{name} is {value!r}: write it as flask-limiter does, "
                f"'600/minute' or '10/minute;100/day' ('' or '0': no limit)"
            ) from None
    app.config.setdefault("RATELIMIT_STORAGE_URI", storage_uri(app.config))
    # A Redis that accepts but does not answer holds a request a second at most.
    app.config.setdefault(
        "RATELIMIT_STORAGE_OPTIONS", {"socket_timeout": 1, "socket_connect_timeout": 1}
    )
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    limiter.init_app(app)
