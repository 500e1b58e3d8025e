"""Developer machine / ``make run``: SQLite under var/, in-memory channel layer, DEBUG on."""

from onair.settings.base import *  # noqa: F403
from onair.settings.base import SECRET_KEY, VAR_DIR
from onair.settings.env import env_bool

DEBUG = env_bool("DJANGO_DEBUG", default=True)
# Not a secret: local only. Production refuses to start without DJANGO_SECRET_KEY.
SECRET_KEY = SECRET_KEY or "onair-local-development-key-not-for-production"

VAR_DIR.mkdir(exist_ok=True)
