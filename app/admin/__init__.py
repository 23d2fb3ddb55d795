"""The admin pages: server-rendered review of checkpoints, jobs, the worker fleet and groups.

Sessions come from Flask-Login, CSRF protection from Flask-WTF on every form (the
bearer-token API is exempt: it carries no cookies). Every page is sent with strict
security headers; JavaScript only adds live updates, so every action works without it.
"""

from __future__ import annotations

from flask import Flask
from flask import g
from flask import has_request_context
from flask import request
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager
from flask_login import current_user
from flask_wtf.csrf import CSRFProtect

from app import queries
from app.admin import auth
from app.admin import checkpoints
from app.admin import filters
from app.admin import fleet
from app.admin import groups
from app.admin import jobs
from app.extensions import db
from app.models import User
from app.status import CheckpointStatus
from app.status import CheckpointType
from app.status import JobStatus
from app.status import Outcome

login_manager = LoginManager()
csrf = CSRFProtect()

#: Sent with every admin page: nothing from other origins, no framing, no sniffing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, marked ``Secure`` whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        secure = super().get_cookie_secure(app)
        return secure or (has_request_context() and request.is_secure)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, user_id)


def is_admin_page() -> bool:
    return has_request_context() and request.path.startswith("/admin")


def init_app(app: Flask) -> None:
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.session_interface = SessionInterface()
    login_manager.init_app(app)
    login_manager.login_view = "admin_auth.login"
    login_manager.login_message = "Sign in to review agent work."
    login_manager.session_protection = "basic"
    # Checked for the admin pages only: the API authenticates with bearer tokens, which a
    # browser never sends on its own, so a forged cross-site request cannot use them.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf.init_app(app)
    for module in (auth, checkpoints, jobs, fleet, groups):
        app.register_blueprint(module.bp)
    # The pages compare statuses and outcomes with the vocabulary, never spelled out.
    app.jinja_env.globals.update(
        JobStatus=JobStatus,
        CheckpointStatus=CheckpointStatus,
        CheckpointType=CheckpointType,
        Outcome=Outcome,
    )
    app.add_template_filter(filters.when)
    app.add_template_filter(filters.ago)
    app.add_template_filter(filters.pretty_json)

    @app.before_request
    def protect_forms():
        if is_admin_page() and request.method not in ("GET", "HEAD", "OPTIONS"):
            csrf.protect()

    @app.context_processor
    def navigation():
        """The pending-checkpoint count for the navigation badge of every admin page."""
        # On the 503 page of an unavailable database, who is signed in cannot be read.
        if not is_admin_page() or g.get("database_unavailable"):
            return {}
        if not current_user.is_authenticated:
            return {}
        return {"pending_count": queries.pending_checkpoint_count()}

    @app.after_request
    def security_headers(response):
        if is_admin_page():
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response
