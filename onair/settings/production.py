"""Production: PostgreSQL from DATABASE_URL, channels-redis from REDIS_URL, secrets from env.

Required: DJANGO_SECRET_KEY, DATABASE_URL, REDIS_URL, ALLOWED_HOSTS.
"""

from django.core.exceptions import ImproperlyConfigured

from onair.settings.base import *  # noqa: F403
from onair.settings.base import ONAIR
from onair.settings.env import channel_layers, env_bool, env_str

for _required in ("DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"):
    if not env_str(_required):
        raise ImproperlyConfigured(f"{_required} must be set in production")

DEBUG = False
CHANNEL_LAYERS = channel_layers(env_str("REDIS_URL"), prefix=env_str("ONAIR_REDIS_PREFIX", "onair"))
# No static files from daphne unless ONAIR_SERVE_STATIC says so: a proxy serves them.
ONAIR = {"SERVE_STATIC": False, **ONAIR}

SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
