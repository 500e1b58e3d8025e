"""Developer machine / ``make run``: SQLite under var/, in-memory channel layer.

DEBUG is off unless ``DJANGO_DEBUG=1``: ``make run`` shows the site's own error pages (a
mistyped address gets the product's 404, not Django's list of URL patterns), wherever it
listens; daphne serves the static files either way (``ONAIR_SERVE_STATIC``).
"""

from onair.settings.base import *  # noqa: F403
from onair.settings.base import SECRET_KEY, VAR_DIR
from onair.settings.env import env_bool, local_secret_key

DEBUG = env_bool("DJANGO_DEBUG", default=False)
# Without DJANGO_SECRET_KEY: a key made for this install, kept in var/secret_key (sessions,
# signed values and the demo stream key derive from it). Production requires the variable.
SECRET_KEY = SECRET_KEY or local_secret_key(VAR_DIR / "secret_key")

VAR_DIR.mkdir(exist_ok=True)
