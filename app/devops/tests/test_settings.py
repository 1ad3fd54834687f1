"""Environment parsing in ``devops.env`` and the settings module built from it."""

import os
import runpy
import secrets

import pytest
from django.core.exceptions import ImproperlyConfigured

from deploy.tests.helpers import APP_DIR, manage, modern_only
from devops import compat
from devops.env import (
    CORE_LAYER_POOL_OPTIONS,
    Env,
    channel_layers,
    check_redis_url,
    database_from_url,
    pubsub_layer_pool_options,
)

PRODUCTION_ENV = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "deploy.example.org",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://deploy.example.org",
    "CHANNEL_LAYER": "redis",
    "REDIS_URL": "redis://:pw@127.0.0.1:6379/0",
}


def load_settings(monkeypatch, **env):
    """Execute devops/settings.py afresh with the contract's variables set to exactly ``env``."""
    for name in list(os.environ):
        if name.startswith(("DJANGO_", "REDIS_", "CHANNEL", "DEPLOY_", "DATABASE_URL")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(os.path.join(APP_DIR, "devops", "settings.py"))


# Env


@pytest.mark.parametrize(
    "raw, value", [("true", True), ("YES", True), (" 1 ", True), ("false", False), ("no", False)]
)
def test_boolean(raw, value):
    assert Env({"X": raw}).boolean("X", not value) is value


def test_boolean_default():
    assert Env({}).boolean("X", True) is True


def test_boolean_rejects_other_words():
    with pytest.raises(ImproperlyConfigured, match=r"X='maybe' is not a boolean"):
        Env({"X": "maybe"}).boolean("X", False)


def test_integer():
    assert Env({"X": "42"}).integer("X", 1) == 42
    assert Env({}).integer("X", 7) == 7
    with pytest.raises(ImproperlyConfigured, match="X='4x' is not an integer"):
        Env({"X": "4x"}).integer("X", 1)
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        Env({"X": "0"}).integer("X", 5, minimum=1)


def test_csv_drops_blanks():
    assert Env({"X": " a, b ,,c "}).csv("X") == ["a", "b", "c"]
    assert Env({}).csv("X", "d,e") == ["d", "e"]


def test_choice_and_log_level():
    assert Env({"X": "Memory"}).choice("X", "redis", ("redis", "memory")) == "memory"
    with pytest.raises(ImproperlyConfigured, match="'kafka' is not one of redis, memory"):
        Env({"X": "kafka"}).choice("X", "redis", ("redis", "memory"))
    assert Env({"L": "debug"}).log_level("L") == "DEBUG"
    assert Env({}).log_level("L") == "INFO"
    with pytest.raises(ImproperlyConfigured, match="L='LOUD'"):
        Env({"L": "loud"}).log_level("L")


# Redis URLs and channel layers


def test_redis_url_default():
    assert Env({}).redis_url() == "redis://127.0.0.1:6379/0"


def test_redis_url_from_parts_quotes_the_password():
    env = Env(
        {
            "REDIS_HOST": "redis.internal",
            "REDIS_PORT": "6380",
            "REDIS_DB": "2",
            "REDIS_PASSWORD": "p@ss:w/rd",
        }
    )
    assert env.redis_url() == "redis://:p%40ss%3Aw%2Frd@redis.internal:6380/2"


def test_redis_url_names_the_acl_user():
    env = Env({"REDIS_USERNAME": "chat.app", "REDIS_PASSWORD": "p@ss"})
    assert env.redis_url() == "redis://chat.app:p%40ss@127.0.0.1:6379/0"
    sentinel = Env({**SENTINEL_ENV, "REDIS_USERNAME": " chat "}).redis()
    assert (sentinel["username"], sentinel["password"]) == ("chat", "p@ss")


def test_redis_url_from_parts_brackets_ipv6():
    assert Env({"REDIS_HOST": "::1"}).redis_url() == "redis://[::1]:6379/0"


def test_redis_url_wins_over_parts():
    url = "rediss://:secret@cache.example.org:6380/1"
    assert Env({"REDIS_URL": url, "REDIS_HOST": "ignored"}).redis_url() == url


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://127.0.0.1:6379/0", "scheme"),
        ("redis://:pw@/0", "no host"),
        ("redis://127.0.0.1:port/0", "port"),
        ("redis://127.0.0.1:6379/zero", "database number"),
    ],
)
def test_bad_redis_urls(url, problem):
    with pytest.raises(ImproperlyConfigured, match=problem):
        check_redis_url(url)


def test_bad_redis_port():
    with pytest.raises(ImproperlyConfigured, match="REDIS_PORT='abc' is not an integer"):
        Env({"REDIS_PORT": "abc"}).redis_url()


def test_redis_layer():
    url = "rediss://:s%40cret@cache.example.org:6380/1"
    layer = channel_layers("redis", url, group_expiry=600, capacity=50, prefix="chat")["default"]
    options = {**CORE_LAYER_POOL_OPTIONS, "max_connections": 1000}
    assert layer == {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": compat.channel_layer_hosts(url, options),
            "prefix": "chat",
            "group_expiry": 600,
            "capacity": 50,
        },
    }


@modern_only
def test_pubsub_layer():
    import redis

    assert channel_layers("redis-pubsub", "redis://h:1/0", 600, 50)["default"] == {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [{"address": "redis://h:1/0", "retry_on_error": [redis.ConnectionError]}],
            "prefix": "asgi",
        },
    }


@modern_only
def test_core_layer_reads_longer_than_it_blocks():
    """channels_redis #422: redis-py's 5 s socket timeout killed idle consumers' 5 s BZPOPMIN."""
    from channels_redis.core import RedisChannelLayer

    config = channel_layers("redis", "redis://h:1/0", 600, 50, max_connections=700)["default"]
    [host] = config["CONFIG"]["hosts"]
    assert host["address"] == "redis://h:1/0"
    assert host["socket_timeout"] > RedisChannelLayer.brpop_timeout + 1
    assert host["socket_keepalive"] is True
    assert host["max_connections"] == 700
    pool = RedisChannelLayer(hosts=[host]).create_pool(0)
    assert pool.max_connections == 700
    assert pool.connection_kwargs["socket_timeout"] == host["socket_timeout"]


# A sentinel cut off must not hang the lookup of the master (test_sentinel.py: silent sentinel).
SENTINEL_TIMEOUTS = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
SENTINEL_ENV = {"REDIS_SENTINELS": "s1:26379, [fd00::2]:26380,s3:26381", "REDIS_PASSWORD": "p@ss"}


def test_sentinels_parsed():
    env = Env({**SENTINEL_ENV, "REDIS_SENTINEL_PASSWORD": "spw", "REDIS_DB": "2"})
    assert env.redis_sentinels() == [("s1", 26379), ("fd00::2", 26380), ("s3", 26381)]
    assert env.redis() == {
        "sentinels": [("s1", 26379), ("fd00::2", 26380), ("s3", 26381)],
        "master_name": "devops",
        "sentinel_kwargs": {"password": "spw", **SENTINEL_TIMEOUTS},
        "username": None,
        "password": "p@ss",
        "db": 2,
    }
    assert Env({"REDIS_SENTINELS": "s1:1", "REDIS_SENTINEL_MASTER": "m"}).redis() == {
        "sentinels": [("s1", 1)],
        "master_name": "m",
        "sentinel_kwargs": {"password": None, **SENTINEL_TIMEOUTS},
        "username": None,
        "password": None,
        "db": 0,
    }
    assert Env({"REDIS_SENTINELS": " "}).redis() == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("other", ["REDIS_URL", "REDIS_HOST"])
def test_sentinels_refuse_url_and_host(other):
    env = Env({**SENTINEL_ENV, other: "redis://h:1/0" if other == "REDIS_URL" else "h"})
    with pytest.raises(ImproperlyConfigured, match=f"{other} and REDIS_SENTINELS are both set"):
        env.redis()


@pytest.mark.parametrize("entry", ["s1", "s1:", ":26379", "s1:port", "s1:70000", "s 1:1"])
def test_bad_sentinel_entries(entry):
    with pytest.raises(ImproperlyConfigured, match="REDIS_SENTINELS entry"):
        Env({"REDIS_SENTINELS": f"ok:1,{entry}"}).redis()


@modern_only
@pytest.mark.parametrize("kind", ["redis", "redis-pubsub"])
def test_sentinel_layers(kind):
    """Both layers get channels-redis' sentinel host; channels-redis builds its pool from it."""
    from channels_redis.utils import create_pool
    from redis.asyncio.sentinel import SentinelConnectionPool

    sentinel = Env({**SENTINEL_ENV, "REDIS_SENTINEL_PASSWORD": "spw"}).redis()
    [host] = channel_layers(kind, sentinel, 600, 50, max_connections=300)["default"]["CONFIG"][
        "hosts"
    ]
    retry = host["sentinel_kwargs"].pop("retry")
    for key, value in sentinel.items():
        assert host[key] == value
    # No retries on a sentinel's connection: the next sentinel is the retry.
    assert retry.get_retries() == 0 and retry.__module__ == "redis.asyncio.retry"
    if kind == "redis":
        assert host["max_connections"] == 300
        assert host["socket_timeout"] == CORE_LAYER_POOL_OPTIONS["socket_timeout"]
    else:  # the master's connections reconnect and retry once (test_pubsub_reconnect.py)
        assert host["retry_on_error"] == pubsub_layer_pool_options()["retry_on_error"]
    pool = create_pool(host)
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "devops"
    assert pool.connection_kwargs["password"] == "p@ss"
    sentinels = pool.sentinel_manager.sentinels
    assert len(sentinels) == 3
    assert sentinels[0].connection_pool.connection_kwargs["password"] == "spw"


def test_sentinels_refused_without_redis_py(monkeypatch):
    """The legacy profile (channels-redis 2, aioredis 1) has no sentinel support."""
    import channels_redis

    monkeypatch.setattr(channels_redis, "__version__", "2.3.1")
    sentinel = Env(SENTINEL_ENV).redis()
    with pytest.raises(ImproperlyConfigured, match="REDIS_SENTINELS needs channels-redis >= 4"):
        channel_layers("redis", sentinel, 600, 50)


def test_sentinel_settings(monkeypatch):
    env = {**PRODUCTION_ENV, **SENTINEL_ENV, "REDIS_SENTINEL_MASTER": "prod"}
    del env["REDIS_URL"]
    if not compat.has_redis_sentinel():
        with pytest.raises(ImproperlyConfigured, match="REDIS_SENTINELS needs"):
            load_settings(monkeypatch, **env)
        return
    settings = load_settings(monkeypatch, **env)
    assert settings["REDIS"]["master_name"] == "prod"
    [host] = settings["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"]
    assert host["master_name"] == "prod"
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL and REDIS_SENTINELS"):
        load_settings(monkeypatch, **env, REDIS_URL="redis://h:1/0")


def test_memory_layer():
    assert channel_layers("memory", "redis://h:1/0", 600, 50)["default"] == {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        "CONFIG": {"group_expiry": 600, "capacity": 50},
    }


# Databases


@pytest.mark.parametrize("url", ["sqlite:///var/lib/db.sqlite3", "sqlite:////var/lib/db.sqlite3"])
def test_sqlite_url(url):
    assert database_from_url(url) == {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "/var/lib/db.sqlite3",
    }


def test_postgres_url():
    assert database_from_url("postgres://dev%40ops:p%2Fw@db.internal:5433/deploy") == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "deploy",
        "USER": "dev@ops",
        "PASSWORD": "p/w",
        "HOST": "db.internal",
        "PORT": "5433",
    }
    assert database_from_url("postgresql://db.internal/deploy")["PORT"] == ""


@pytest.mark.parametrize(
    "url, error",
    [
        ("sqlite://relative/db.sqlite3", "absolute path"),
        ("sqlite:db.sqlite3", "absolute path"),
        ("sqlite:///", "absolute path"),
        ("postgres://user:pw@db.internal:port/deploy", "port is not a number"),
        ("postgres://user:pw@db.internal:5432/", "postgres://user:password@host:port/name"),
        ("mysql://db/deploy", "not supported"),
    ],
)
def test_bad_database_urls(url, error):
    with pytest.raises(ImproperlyConfigured, match=error) as excinfo:
        database_from_url(url)
    assert ":pw@" not in str(excinfo.value)


# The settings module


def test_production_defaults(monkeypatch, tmp_path):
    settings = load_settings(monkeypatch, DJANGO_DATA_DIR=str(tmp_path), **PRODUCTION_ENV)
    assert settings["DEBUG"] is False
    assert settings["SECURE_SSL_REDIRECT"] is True
    assert settings["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    assert settings["SECURE_HSTS_SECONDS"] == 31536000
    assert settings["SESSION_COOKIE_SECURE"] and settings["CSRF_COOKIE_SECURE"]
    assert settings["SECURE_REDIRECT_EXEMPT"] == [r"^healthz$", r"^readyz$", r"^metrics$"]
    assert settings["X_FRAME_OPTIONS"] == "DENY"
    assert settings["DATABASES"]["default"]["NAME"] == str(tmp_path / "db.sqlite3")
    assert settings["CSRF_TRUSTED_ORIGINS"] == compat.csrf_trusted_origins(
        ["https://deploy.example.org"]
    )
    assert settings["DEPLOY_PUSH_TOKEN"] == ""
    assert settings["DEPLOY_MAX_MESSAGE_BYTES"] == 65536
    assert settings["DEPLOY_HISTORY_LENGTH"] == 1000
    assert settings["DEPLOY_NODE"] == ""
    assert settings["DEPLOY_HISTORY_REPLICAS"] == 0
    assert settings["DEPLOY_HISTORY_WAIT_MS"] == 1000
    assert settings["DEPLOY_HISTORY_CHECK_MS"] == 5000
    assert settings["CHANNELS_REDIS_MAX_CONNECTIONS"] == 1000
    assert settings["LOGGING"]["root"]["level"] == "INFO"
    layer = settings["CHANNEL_LAYERS"]["default"]
    options = {**CORE_LAYER_POOL_OPTIONS, "max_connections": 1000}
    assert layer["CONFIG"] == {
        "hosts": compat.channel_layer_hosts("redis://:pw@127.0.0.1:6379/0", options),
        "prefix": "asgi",
        "group_expiry": 86400,
        "capacity": 100,
    }


def test_plain_http_deployment(monkeypatch):
    settings = load_settings(monkeypatch, DJANGO_HTTPS="false", **PRODUCTION_ENV)
    assert settings["SECURE_SSL_REDIRECT"] is False
    assert settings["SECURE_HSTS_SECONDS"] == 0
    assert not settings["SESSION_COOKIE_SECURE"] and not settings["CSRF_COOKIE_SECURE"]
    assert "SECURE_PROXY_SSL_HEADER" not in settings


def test_debug_runs_without_secret_key(monkeypatch):
    settings = load_settings(monkeypatch, DJANGO_DEBUG="true")
    assert settings["DEBUG"] is True
    assert settings["SECRET_KEY"]


@pytest.mark.parametrize(
    "env, error",
    [
        ({}, "DJANGO_SECRET_KEY is required"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe' is not a boolean"),
        ({"DJANGO_HTTPS": "sometimes"}, "DJANGO_HTTPS='sometimes'"),
        ({"DJANGO_ALLOWED_HOSTS": " , "}, "DJANGO_ALLOWED_HOSTS must name"),
        ({"REDIS_PORT": "six"}, "REDIS_PORT='six' is not an integer"),
        ({"REDIS_URL": "tcp://x:1"}, "REDIS_URL is invalid"),
        ({"CHANNEL_LAYER": "rabbit"}, "CHANNEL_LAYER='rabbit' is not one of"),
        ({"CHANNELS_CAPACITY": "0"}, "CHANNELS_CAPACITY='0' must be at least 1"),
        ({"CHANNELS_GROUP_EXPIRY": "1d"}, "CHANNELS_GROUP_EXPIRY='1d' is not an integer"),
        ({"DEPLOY_MAX_MESSAGE_BYTES": "big"}, "DEPLOY_MAX_MESSAGE_BYTES='big'"),
        ({"DEPLOY_HISTORY_LENGTH": "-1"}, "DEPLOY_HISTORY_LENGTH='-1' must be at least 0"),
        ({"DJANGO_HSTS_SECONDS": "-1"}, "DJANGO_HSTS_SECONDS='-1' must be at least 0"),
        ({"DJANGO_LOG_LEVEL": "chatty"}, "DJANGO_LOG_LEVEL='CHATTY' is not one of"),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL scheme 'mysql'"),
        ({"DEPLOY_HISTORY_REPLICAS": "-1"}, "DEPLOY_HISTORY_REPLICAS='-1' must be at least 0"),
        ({"DEPLOY_HISTORY_WAIT_MS": "0"}, "DEPLOY_HISTORY_WAIT_MS='0' must be at least 1"),
        ({"CHANNELS_REDIS_MAX_CONNECTIONS": "0"}, "CHANNELS_REDIS_MAX_CONNECTIONS='0' must be"),
        ({"REDIS_SENTINELS": "s:1", "REDIS_HOST": "h"}, "REDIS_HOST and REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s:x"}, "REDIS_SENTINELS entry 's:x' is invalid"),
    ],
)
def test_bad_environment_is_refused(monkeypatch, env, error):
    if env:
        env = {"DJANGO_SECRET_KEY": "k", **env}
    with pytest.raises(ImproperlyConfigured, match=error):
        load_settings(monkeypatch, **env)


def test_process_with_bad_environment_refuses_to_start():
    result = manage("check", env={"DJANGO_DEBUG": "maybe"})
    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_DEBUG='maybe' is not a boolean" in result.stderr


@modern_only
def test_check_deploy_is_clean_with_https(tmp_path):
    env = {**PRODUCTION_ENV, "DJANGO_HTTPS": "true", "DJANGO_DATA_DIR": str(tmp_path)}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # The one silenced: preloading HSTS (W021), off unless DJANGO_HSTS_PRELOAD asks for it.
    assert "System check identified no issues (1 silenced)." in result.stdout
    preload = manage("check", "--deploy", env={**env, "DJANGO_HSTS_PRELOAD": "true"})
    assert "System check identified no issues (0 silenced)." in preload.stdout, preload.stdout
