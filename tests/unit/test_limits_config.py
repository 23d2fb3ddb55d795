"""The rate-limit settings: read from the environment, checked when the app is made."""

from __future__ import annotations

import pytest
from flask import Flask

from app import limits
from app.config import Config
from app.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "600/minute"), ("", ""), ("0", ""), (" 5/second;100/hour ", "5/second;100/hour")],
)
def test_a_limit_is_read_from_the_environment_and_empty_or_0_turns_it_off(
    monkeypatch, value, expected
):
    if value is None:
        monkeypatch.delenv("RATE_LIMIT_JOBS", raising=False)
    else:
        monkeypatch.setenv("RATE_LIMIT_JOBS", value)
    assert Config().RATE_LIMIT_JOBS == expected


def test_a_limit_flask_limiter_cannot_read_stops_the_app_naming_the_setting():
    app = Flask(__name__)
    app.config.update(
        RATE_LIMIT_JOBS="600/minute", RATE_LIMIT_DECISIONS="lots", LOGIN_RATE_LIMIT=""
    )
    with pytest.raises(ConfigError, match=r"RATE_LIMIT_DECISIONS is 'lots': write it as"):
        limits.init_app(app)
