"""On ``PYTHONPATH`` for the processes the suite starts (tests/conftest.py): their
``secrets.token_urlsafe`` tokens go to the run's secrets file (tests/secret_watch.py)."""

import os
import sys
from pathlib import Path

_path = os.environ.get("ONAIR_TEST_SECRETS_FILE")
if _path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.secret_watch import append_to, record_generated_secrets

    record_generated_secrets(append_to(Path(_path)))
    sys.path.pop(0)
