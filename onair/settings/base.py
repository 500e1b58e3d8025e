"""Settings shared by every environment. Environment modules import ``*`` from here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from onair.conf import environment_overrides
from onair.logging import LOG_FORMATS
from onair.settings.env import (
    caches,
    channel_layers,
    database_from_url,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
CSRF_FAILURE_VIEW = "onair.exception_handler.csrf_failure"

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
    "recordings",
    "chat",
    "webhooks",
]

# Django's, those whose hooks do no I/O in onair.middleware: run inline for async views.
MIDDLEWARE = [
    "onair.middleware.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "onair.middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "onair.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "onair.middleware.XFrameOptionsMiddleware",
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

# Django's two defaults, plus where finished recordings are kept: ONAIR_RECORDING_STORAGE
# names the alias (docs/RECORDING.md shows one for S3 through django-storages), and where
# stream posters are (broadcast.storage; any backend likewise).
STORAGES: dict[str, Any] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "recordings": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": Path(env_str("RECORDINGS_ROOT", str(VAR_DIR / "recordings")))},
    },
    "thumbnails": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": Path(env_str("THUMBNAILS_ROOT", str(VAR_DIR / "thumbnails")))},
    },
}

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
    # Streams and recordings both have a "state": one enum each, named for what it is.
    "ENUM_NAME_OVERRIDES": {
        "StreamStateEnum": "broadcast.models.Stream.State",
        "RecordingStateEnum": "recordings.models.Recording.State",
    },
}

# ``plain``: a key=value line per event; ``json``: one JSON object per line (onair/logging.py).
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}.")

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "onair.logging.KeyValueFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "onair.logging.JsonFormatter"},
    },
    "filters": {
        "context": {"()": "onair.logcontext.LogContext"},
        "redact": {"()": "onair.logging.RedactSecrets"},
        "suspicious_as_warnings": {"()": "onair.logging.SuspiciousRequestsAsWarnings"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context", "redact", "suspicious_as_warnings"],
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

# Everything OnAir-specific lives in one namespaced dict of overrides: the ONAIR_<KEY>
# environment variables that are set. Keys, types and defaults: onair/conf.py, docs/SETTINGS.md.
ONAIR: dict[str, Any] = environment_overrides()
