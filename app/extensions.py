"""Extensions created once at import time and bound to an app in ``create_app``."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
#: Every limit names its own key (``app.limits``); the client's address is only the fallback.
limiter = Limiter(key_func=get_remote_address)
