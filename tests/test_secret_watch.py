"""The suite-wide check of tests/secret_watch.py fails when a secret reaches a log line:
one written by this process's handler (where the redaction missed it), and one in a log
file of a process the suite started, whose tokens it learned from that process."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

from onair.logging import KeyValueFormatter, RedactSecrets
from tests.secret_watch import SECRETS_FILE_ENV, SecretWatch, WatchLines


def _handler(watch: SecretWatch) -> tuple[logging.Logger, logging.Handler]:
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 (closed below)
    handler.setFormatter(KeyValueFormatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactSecrets())
    handler.addFilter(WatchLines(watch, handler))
    logger = logging.getLogger("tests.secret_watch.demo")
    logger.propagate = False  # this test's leaks are for its own watch only
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, handler


def test_a_token_the_code_made_is_found_where_the_redaction_missed_it() -> None:
    watch = SecretWatch()
    token = secrets.token_urlsafe(32)  # recorded by the suite's wrapper, and by this watch:
    watch.add(token)
    logger, handler = _handler(watch)
    try:
        logger.info("DELETE /whep/demo/%s", token)  # redacted: the session URL's form
        logger.info("issued sk_%s", token)  # redacted: a stream key's form
        assert watch.leaks == []
        logger.info("session", extra={"token": token})  # a form the redaction does not know
        assert len(watch.leaks) == 1
        assert "log record of tests.secret_watch.demo" in watch.leaks[0]
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_a_started_process_records_its_tokens_and_its_log_is_checked(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-c", "import secrets; print(secrets.token_urlsafe(32))"],
        env=os.environ,  # as the suite's servers get it: PYTHONPATH and the secrets file
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    watch = SecretWatch()
    watch.load(Path(os.environ[SECRETS_FILE_ENV]))
    assert made in watch.secrets
    # Not .log files: the suite checks those, and this one leaks on purpose.
    clean, leaky = tmp_path / "clean.txt", tmp_path / "leaky.txt"
    clean.write_text(f"POST /whip/demo/<token> 201\nDELETE /whip/demo/{'x' * 43}\n")
    leaky.write_text(f"GET /whep/demo/{made} 200\n")
    watch.check_files([clean, leaky])
    assert [leak.split(":")[0] for leak in watch.leaks] == [str(leaky)]
    watch.check("a line", "the demo key sk_demo_0123456789abcdef")
    assert len(watch.leaks) == 2
