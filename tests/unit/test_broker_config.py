"""The broker settings: BROKER_URL picks Redis or RabbitMQ, RABBITMQ_QUEUE_TYPE the queues,
and the rate limits go where Redis is, or stay in the process."""

from __future__ import annotations

import pytest

from app import limits
from app.config import Config
from app.errors import ConfigError

AMQP = "amqp://guest:guest@127.0.0.1:5672/agentq"
REDIS = "redis://127.0.0.1:6379/0"


def test_without_broker_url_the_broker_is_redis_url(monkeypatch):
    monkeypatch.delenv("BROKER_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", REDIS)
    settings = Config().as_dict()
    assert settings["BROKER_URL"] == REDIS
    assert settings["CELERY"]["broker_url"] == REDIS
    assert settings["CELERY"]["broker_transport"] == "worker.transport:Transport"


def test_an_unknown_rabbitmq_queue_type_stops_the_app_naming_the_setting(monkeypatch):
    monkeypatch.setenv("BROKER_URL", AMQP)
    monkeypatch.setenv("RABBITMQ_QUEUE_TYPE", "mirrored")
    with pytest.raises(ConfigError, match=r"RABBITMQ_QUEUE_TYPE is 'mirrored': classic or quorum"):
        Config().as_dict()


@pytest.mark.parametrize(
    ("redis_url", "broker_url", "store"),
    [
        (REDIS, REDIS, REDIS),
        (None, REDIS, REDIS),
        (REDIS, AMQP, REDIS),
        (None, AMQP, "memory://"),
    ],
)
def test_the_rate_limits_count_in_redis_where_there_is_one(redis_url, broker_url, store):
    assert limits.storage_uri({"REDIS_URL": redis_url, "BROKER_URL": broker_url}) == store
