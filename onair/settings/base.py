"""Settings shared by every environment. Environment modules import ``*`` from here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onair.settings.env import (
    caches,
    channel_layers,
    database_from_url,
    env_bool,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "broadcast",
    "viewers",
    "signaling",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "onair.urls"
ASGI_APPLICATION = "onair.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "onair.context_processors.onair",
            ],
        },
    },
]

# Embedded default: one SQLite file under var/. DATABASE_URL switches to PostgreSQL.
DATABASES = {
    "default": database_from_url(env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"))
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Embedded default: the in-process layer. REDIS_URL switches to channels-redis;
# ONAIR_REDIS_PREFIX starts every OnAir key there (channel layer and SFU cluster registry).
CHANNEL_LAYERS = channel_layers(
    env_str("REDIS_URL") or None, prefix=env_str("ONAIR_REDIS_PREFIX", "onair")
)
# Django's cache (login throttling): this process's memory, or Redis shared by every process.
CACHES = caches(env_str("REDIS_URL") or None, prefix=env_str("ONAIR_REDIS_PREFIX", "onair"))

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "broadcast:my-streams"
LOGOUT_REDIRECT_URL = "broadcast:home"

# Messages can carry a freshly issued stream key: keep them server-side, never in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))

REST_FRAMEWORK: dict[str, Any] = {
    # Token first: its WWW-Authenticate header turns "not logged in" into a 401, not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "onair.pagination.PageNumberPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "onair.exception_handler.api_exception_handler",
    "PAGE_SIZE": 20,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "OnAir API",
    "DESCRIPTION": "Manage live streams: create, rotate stream keys, go live, end.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's JS/CSS from our static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "onair.logging.KeyValueFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "filters": {
        "redact": {"()": "onair.logging.RedactSecrets"},
        "suspicious_as_warnings": {"()": "onair.logging.SuspiciousRequestsAsWarnings"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact", "suspicious_as_warnings"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
    "loggers": {
        "onair": {"level": env_str("ONAIR_LOG_LEVEL", "INFO"), "propagate": True},
        # Without its own handlers: Django's default ones (a console handler under DEBUG)
        # would print every record a second time, past the redacting filter.
        "django": {"level": "INFO", "handlers": [], "propagate": True},
    },
}

# Everything OnAir-specific lives in one namespaced dict; read it through onair.conf.
ONAIR: dict[str, Any] = {
    "SITE_NAME": env_str("ONAIR_SITE_NAME", "OnAir"),
    # Anyone may create an account on the sign-up page.
    "ALLOW_SIGNUP": env_bool("ONAIR_ALLOW_SIGNUP", default=True),
    # Serve /static/ from daphne itself (no proxy in front). Production sets it off.
    "SERVE_STATIC": env_bool("ONAIR_SERVE_STATIC", default=True),
    # ICE (signaling/ice.py, docs/NAT.md). Empty by default: no traffic leaves the machine.
    "STUN_URLS": env_list("ONAIR_STUN_URLS", []),
    "TURN_URLS": env_list("ONAIR_TURN_URLS", []),
    # coturn's static-auth-secret: credentials are derived from it, it is never sent out.
    "TURN_SECRET": env_str("ONAIR_TURN_SECRET"),
    "TURN_TTL_SECONDS": int(env_str("ONAIR_TURN_TTL_SECONDS", "86400")),
    # "relay": viewers connect through TURN only, hiding their address.
    "ICE_TRANSPORT_POLICY": env_str("ONAIR_ICE_TRANSPORT_POLICY", "all"),
    # The SFU behind a 1:1 NAT (cloud VM): its public address, and its ICE UDP ports.
    "PUBLIC_IP": env_str("ONAIR_PUBLIC_IP"),
    "UDP_PORT_RANGE": env_str("ONAIR_UDP_PORT_RANGE"),
    # How long viewers stay attached, waiting, when the broadcaster's connection drops.
    "PUBLISHER_GRACE_SECONDS": float(env_str("ONAIR_PUBLISHER_GRACE_SECONDS", "10")),
    # A publisher sending no RTP/RTCP this long is "reconnecting" and its grace starts (a muted
    # Chromium still sends every 0.1 s, with Opus DTX every 0.4 s); 0: ICE consent (≈ 30 s).
    "PUBLISHER_MEDIA_TIMEOUT_SECONDS": float(env_str("ONAIR_PUBLISHER_MEDIA_TIMEOUT_SECONDS", "2")),
    # Sessions (docs/SECURITY.md): an SFU peer (WHIP, WHEP, studio, watch page) not connected
    # this long after its offer is closed; 0 never closes it.
    "CONNECT_TIMEOUT_SECONDS": float(env_str("ONAIR_CONNECT_TIMEOUT_SECONDS", "20")),
    # Concurrent sessions from one client address (each of: peers, WebSockets); 0: no cap.
    "MAX_SESSIONS_PER_ADDRESS": int(env_str("ONAIR_MAX_SESSIONS_PER_ADDRESS", "50")),
    # Viewers of one stream, connected or connecting; 0: only MAX_SESSIONS applies.
    "MAX_VIEWERS_PER_STREAM": int(env_str("ONAIR_MAX_VIEWERS_PER_STREAM", "0")),
    # SFU peers in one process; 0: as many as its file-descriptor limit allows.
    "MAX_SESSIONS": int(env_str("ONAIR_MAX_SESSIONS", "0")),
    # Open WebSockets in one process, with or without a peer; 0: as many as MAX_SESSIONS'
    # default (the two split the file descriptors).
    "MAX_WEBSOCKETS": int(env_str("ONAIR_MAX_WEBSOCKETS", "0")),
    # An HTTP request body, refused with 413 as it arrives by `python -m onair.serve`; the
    # largest legitimate ones (SDP offers, API JSON, admin forms) are under 64 KiB. 0: no limit.
    "MAX_REQUEST_BYTES": int(env_str("ONAIR_MAX_REQUEST_BYTES", "1048576")),
    # Bytes of one WebSocket's messages waiting for its consumer (each counted with 1 KiB of
    # overhead) before `python -m onair.serve` closes it with 4429; a page has a few KiB. 0: none.
    "MAX_WEBSOCKET_BACKLOG": int(env_str("ONAIR_MAX_WEBSOCKET_BACKLOG", "1048576")),
    # Scale-out (docs/SCALING.md): "embedded" runs the SFU inside each daphne process;
    # "cluster" sends media to `manage.py runsfu` workers over the Redis channel layer.
    "SFU_MODE": env_str("ONAIR_SFU_MODE", "embedded"),
    # A worker takes no more viewers than this while another worker has room (edges).
    "SFU_MAX_VIEWERS_PER_WORKER": int(env_str("ONAIR_SFU_MAX_VIEWERS_PER_WORKER", "300")),
    # Where workers bind their origin→edge pipes: loopback, or the cluster network.
    "SFU_PIPE_HOST": env_str("ONAIR_SFU_PIPE_HOST", "127.0.0.1"),
    # Failed logins (login form and API token) counted per client address and per username
    # over a window; past either limit, logins answer 429 until the window ends.
    "LOGIN_FAILURES_PER_ADDRESS": int(env_str("ONAIR_LOGIN_FAILURES_PER_ADDRESS", "20")),
    "LOGIN_FAILURES_PER_USERNAME": int(env_str("ONAIR_LOGIN_FAILURES_PER_USERNAME", "10")),
    "LOGIN_WINDOW_SECONDS": int(env_str("ONAIR_LOGIN_WINDOW_SECONDS", "900")),
    # Streams one account may own (staff: no limit; 0: no limit for anyone).
    "MAX_STREAMS_PER_USER": int(env_str("ONAIR_MAX_STREAMS_PER_USER", "20")),
}
