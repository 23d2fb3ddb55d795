"""API authentication: bearer tokens, stored hashed; roles user and admin.

A token is ``aq_`` and 43 URL-safe characters, shown once when it is made
(``agentq users create``, ``agentq tokens create``); only its SHA-256 and its first
characters (``prefix``, to tell tokens apart in ``agentq tokens list``) are stored,
and every request looks it up, so a revoked token is refused at once. The statement that
looks it up also records when it was last used, writing at most once a minute per token
(``app/sql/hot.sql``), so requests do not each cost a write.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from flask import g
from flask import has_request_context
from flask import request
from werkzeug.exceptions import TooManyRequests
from werkzeug.security import generate_password_hash

from app.errors import AuthError
from app.errors import ForbiddenError
from app.errors import NotFoundError
from app.extensions import db
from app.models import ApiToken
from app.models import User
from app.sql import run_one

TOKEN_PREFIX = "aq_"
#: Characters of a token kept in the clear to tell it apart: ``aq_`` and 5 of its 43.
SHOWN = len(TOKEN_PREFIX) + 5
BEARER = {"bearerAuth": []}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(name: str, *, admin: bool = False) -> tuple[User, ApiToken, str]:
    """Create a user and a first token; returns the user, the token row and the token."""
    user = User(name=name, is_admin=admin)
    db.session.add(user)
    db.session.flush()
    row, token = create_token(user)
    return user, row, token


def create_token(user: User) -> tuple[ApiToken, str]:
    """Make and commit a token for ``user``; returns the row and the token itself."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:SHOWN])
    db.session.add(row)
    db.session.commit()
    return row, token


def revoke_token(token_id: uuid.UUID) -> ApiToken:
    """:raises NotFoundError: for an unknown token id."""
    row = db.session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"Token {token_id} not found")
    if row.revoked_at is None:
        row.revoked_at = sa.func.clock_timestamp()
        db.session.commit()
    return row


def list_tokens(user: User | None = None) -> list[ApiToken]:
    """Every token (``user``'s only, when given), oldest first, with its user."""
    stmt = sa.select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    if user is not None:
        stmt = stmt.where(ApiToken.user_id == user.id)
    return list(db.session.scalars(stmt))


#: What a token id or a prefix of one may hold: hex digits and the UUID's dashes.
_ID_OR_PREFIX = re.compile(r"[0-9a-f-]+")


def tokens_matching(id_or_prefix: str) -> list[ApiToken]:
    """The tokens whose id is ``id_or_prefix`` or starts with it (any case), oldest first;
    none for text that cannot begin a UUID."""
    prefix = id_or_prefix.strip().lower()
    if not _ID_OR_PREFIX.fullmatch(prefix):
        return []
    stmt = (
        sa.select(ApiToken)
        .where(sa.cast(ApiToken.id, sa.Text).startswith(prefix, autoescape=True))
        .order_by(ApiToken.created_at, ApiToken.id)
    )
    return list(db.session.scalars(stmt))


def users_and_tokens() -> list[tuple[User, int]]:
    """Every user by name, with how many tokens they hold that are not revoked."""
    usable = sa.func.count(ApiToken.id).filter(ApiToken.revoked_at.is_(None))
    stmt = (
        sa.select(User, usable)
        .outerjoin(ApiToken, ApiToken.user_id == User.id)
        .group_by(User.id)
        .order_by(User.name)
    )
    return [(user, tokens) for user, tokens in db.session.execute(stmt)]


def set_admin(user: User, admin: bool) -> bool:
    """Give ``user`` the admin role, or take it away, and commit; whether that changed it.

    Their API tokens and admin pages session follow at the next request.
    """
    if user.is_admin == admin:
        return False
    user.is_admin = admin
    db.session.commit()
    return True


def set_password(user: User, password: str) -> None:
    """Set and commit the password ``user`` signs in to the admin pages with."""
    user.password_hash = generate_password_hash(password)
    db.session.commit()


def user_by_name(name: str) -> User:
    """:raises NotFoundError: for an unknown user."""
    user = db.session.execute(sa.select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise NotFoundError(f"User {name!r} not found")
    return user


@dataclass(frozen=True)
class Caller:
    """The user an API request acts for."""

    id: uuid.UUID
    name: str
    is_admin: bool


#: What a request with a token that is unknown or revoked is told.
INVALID_TOKEN = "Invalid or revoked token"
#: What a user who is not an admin is told on an admin endpoint.
ADMINS_ONLY = "This endpoint is for admins"


def bearer_token_hash() -> str:
    """The hash of the request's bearer token (not yet checked against the tokens).

    :raises AuthError: when the request carries none.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Missing bearer token: send 'Authorization: Bearer <token>'")
    return hash_token(token.strip())


def authenticate() -> Caller:
    """The user whose bearer token the request carries (one statement).

    :raises AuthError: for no token, or an unknown or revoked one.
    """
    row = run_one("authenticate", token_hash=bearer_token_hash())
    if row is None:
        raise AuthError(INVALID_TOKEN)
    return Caller(row.id, row.name, row.is_admin)


def current_user() -> Caller:
    return g.user


def identified(user_id: uuid.UUID, name: str, is_admin: bool) -> None:
    """Record who a statement that checked the request's token found (``in_statement``)."""
    if has_request_context():
        g.user = Caller(user_id, name, is_admin)


def login_required(*, admin: bool = False, in_statement: bool = False) -> Callable:
    """Require a valid token (and the admin role when ``admin``) before the view runs.

    With ``in_statement``, the view's own statement checks the token (``g.token_hash``),
    one round trip to Postgres fewer (``app.state.enqueue`` and ``decide`` take it): only
    the header is checked before the view. If the view fails before its statement said who
    called (bad input, say), the token is checked then, so that a caller without a valid
    token (or an admin's role) is still told so first; but not over a rate limit
    (``app.limits``): a 429 costs Postgres nothing.

    :raises AuthError: 401 without a valid token.
    :raises ForbiddenError: 403 for a non-admin on an admin endpoint.
    """

    def check() -> Caller:
        caller = authenticate()
        if admin and not caller.is_admin:
            raise ForbiddenError(ADMINS_ONLY)
        return caller

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if not in_statement:
                g.user = check()
                return view(*args, **kwargs)
            g.token_hash = bearer_token_hash()
            try:
                return view(*args, **kwargs)
            except (AuthError, ForbiddenError, TooManyRequests):
                raise
            except Exception:
                if g.get("user") is None:
                    g.user = check()
                raise

        return wrapper

    return decorator
