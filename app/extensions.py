"""Extensions created once at import time and bound to an app in ``create_app``."""

from __future__ import annotations

import logging

import flask_sqlalchemy
import sqlalchemy as sa
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from sqlalchemy.orm import DeclarativeBase

log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


class SQLAlchemy(flask_sqlalchemy.SQLAlchemy):
    """Flask-SQLAlchemy, whose end-of-request cleanup cannot fail the request."""

    def _teardown_session(self, exc: BaseException | None) -> None:
        # The teardown runs after the answer is made, and after whatever it reports was
        # committed: a rollback on a connection the server dropped meanwhile must not
        # turn that answer into an error page. The pool has thrown the connection away.
        try:
            super()._teardown_session(exc)
        except sa.exc.SQLAlchemyError:
            log.warning("closing the request's database session failed", exc_info=True)
            self.session.registry.clear()


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
#: Every limit names its own key (``app.limits``); the client's address is only the fallback.
limiter = Limiter(key_func=get_remote_address)
