"""Settings of the devops project, read from the environment.

docs/architecture.md lists every variable with its default. Bad values raise
``ImproperlyConfigured`` (see ``devops.env``). The defaults are the production ones: a
deployment served over plain HTTP must say ``DJANGO_HTTPS=false``.
"""

import os
import os.path

from django.core.exceptions import ImproperlyConfigured

from devops import compat
from devops.env import (
    ACCESS_MODES,
    CHANNEL_LAYER_KINDS,
    Env,
    channel_layers,
    database_from_url,
    logging_config,
)

env = Env(os.environ)

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEBUG = env.boolean("DJANGO_DEBUG", False)

SECRET_KEY = env.string("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required unless DJANGO_DEBUG=true")
    SECRET_KEY = "django-insecure-development-key-only-used-with-DJANGO_DEBUG"

ALLOWED_HOSTS = env.csv("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
if not ALLOWED_HOSTS and not DEBUG:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must name at least one host")
CSRF_TRUSTED_ORIGINS = compat.csrf_trusted_origins(env.csv("DJANGO_CSRF_TRUSTED_ORIGINS"))
# Websocket handshakes come from the site's own origin or one of these (deploy.origin).
WEBSOCKET_TRUSTED_ORIGINS = env.csv("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "channels",
    "deploy",
]

MIDDLEWARE = [
    # First: it times the whole answer (deploy_http_request_duration_seconds).
    "deploy.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "devops.urls"
WSGI_APPLICATION = "devops.wsgi.application"
ASGI_APPLICATION = "devops.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
    },
]

DATA_DIR = os.path.abspath(env.string("DJANGO_DATA_DIR", os.path.join(BASE_DIR, "var")))
DEFAULT_DATABASE_URL = "sqlite://" + os.path.join(DATA_DIR, "db.sqlite3")
DATABASES = {"default": database_from_url(env.string("DATABASE_URL", DEFAULT_DATABASE_URL))}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

STATIC_URL = "/static/"
STATIC_ROOT = env.string("STATIC_ROOT", os.path.join(BASE_DIR, "static"))

# Security. DJANGO_HTTPS=true (the default) means TLS ends at nginx, which sets
# X-Forwarded-Proto; `manage.py check --deploy` is then clean.
HTTPS = env.boolean("DJANGO_HTTPS", True)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = HTTPS
# Health probes and the metrics scraper reach the app over plain HTTP (nginx lets only them in).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.integer("DJANGO_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.boolean("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env.boolean("DJANGO_HSTS_PRELOAD", False)
# Preloading is the domain owner's decision (hard to undo): off unless asked for.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
X_FRAME_OPTIONS = "DENY"

# Channels.
CHANNELS_PREFIX = env.string("CHANNELS_PREFIX", "asgi")
# Connections each Redis connection pool of a process may open (the core layer's, the history's).
CHANNELS_REDIS_MAX_CONNECTIONS = env.integer("CHANNELS_REDIS_MAX_CONNECTIONS", 1000, minimum=1)
# A URL, or with REDIS_SENTINELS channels-redis' sentinel host dict (devops.env.Env.redis).
REDIS = env.redis()
CHANNEL_LAYERS = channel_layers(
    env.choice("CHANNEL_LAYER", "redis", CHANNEL_LAYER_KINDS),
    REDIS,
    group_expiry=env.integer("CHANNELS_GROUP_EXPIRY", 86400, minimum=1),
    capacity=env.integer("CHANNELS_CAPACITY", 100, minimum=1),
    prefix=CHANNELS_PREFIX,
    max_connections=CHANNELS_REDIS_MAX_CONNECTIONS,
)

# The deploy app.
DEPLOY_PUSH_TOKEN = env.string("DEPLOY_PUSH_TOKEN").strip()
# Who may read a service's websocket (deploy.grants): "grant" (a signed grant, from the page's grant
# view or `manage.py grant`) or "open" (anyone who reaches the site).
DEPLOY_WEBSOCKET_ACCESS = env.choice("DEPLOY_WEBSOCKET_ACCESS", "grant", ACCESS_MODES)
# Services whose websocket clients may send (names, or patterns with *), with a grant that may send.
DEPLOY_CLIENT_WRITE_SERVICES = env.patterns("DEPLOY_CLIENT_WRITE_SERVICES")
# Seconds a grant of the page's grant view lasts (it is checked when a websocket opens).
DEPLOY_GRANT_SECONDS = env.integer("DEPLOY_GRANT_SECONDS", 300, minimum=10)
DEPLOY_MAX_MESSAGE_BYTES = env.integer("DEPLOY_MAX_MESSAGE_BYTES", 65536, minimum=1)
# Frames a websocket client may send per second on average (0: no limit), and at once; over them the
# connection is closed with 4429. After this many refused frames it is closed with 4008 (0: never).
DEPLOY_CLIENT_FRAMES_PER_SECOND = env.integer("DEPLOY_CLIENT_FRAMES_PER_SECOND", 20, minimum=0)
DEPLOY_CLIENT_FRAME_BURST = env.integer("DEPLOY_CLIENT_FRAME_BURST", 40, minimum=1)
DEPLOY_CLIENT_BAD_FRAMES = env.integer("DEPLOY_CLIENT_BAD_FRAMES", 10, minimum=0)
# Entries kept per service for resuming websockets (deploy.history); 0 turns the history off.
DEPLOY_HISTORY_LENGTH = env.integer("DEPLOY_HISTORY_LENGTH", 1000)
# Replicas that must acknowledge each history entry before a push succeeds (Redis WAIT), and how
# many milliseconds the push waits for them.
DEPLOY_HISTORY_REPLICAS = env.integer("DEPLOY_HISTORY_REPLICAS", 0)
DEPLOY_HISTORY_WAIT_MS = env.integer("DEPLOY_HISTORY_WAIT_MS", 1000, minimum=1)
# Milliseconds a websocket may go without a message before its consumer asks the stream for entries
# the channel layer lost (deploy.consumers.DeployConsumer.check_history); 0 turns the check off.
DEPLOY_HISTORY_CHECK_MS = env.integer("DEPLOY_HISTORY_CHECK_MS", 5000)
# The node whose websockets `manage.py drain_websockets` closes; empty means the host name.
DEPLOY_NODE = env.string("DEPLOY_NODE").strip()

LOGGING = logging_config(env.log_level("DJANGO_LOG_LEVEL"))
