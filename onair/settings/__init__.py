"""Settings modules: ``base`` plus one per environment (``local``, ``production``, ``test``).

``DJANGO_SETTINGS_MODULE`` selects one; ``manage.py`` and ``asgi.py`` default to ``local``.
"""
