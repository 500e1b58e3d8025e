import logging

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils.log import configure_logging

from onair.logging import KeyValueFormatter, RedactSecrets, SuspiciousRequestsAsWarnings, redact


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "sfu.router", logging.INFO, __file__, 1, "publisher joined", None, None
    )
    record.__dict__.update(extra)
    return record


def test_extra_fields_are_appended_as_key_value_pairs() -> None:
    line = KeyValueFormatter("%(levelname)s %(name)s %(message)s").format(
        _record(router_id="7", publisher_id="abc")
    )
    assert line == "INFO sfu.router publisher joined publisher_id=abc router_id=7"


def test_a_record_without_extras_is_unchanged() -> None:
    assert KeyValueFormatter("%(message)s").format(_record()) == "publisher joined"


def test_the_redacting_filter_takes_secrets_out_of_every_part_of_a_record() -> None:
    token = "T" * 43
    record = logging.LogRecord(
        "django.request", logging.WARNING, __file__, 1, "Not Found: %s", (f"/whep/s/{token}",), None
    )
    record.request = f"<ASGIRequest: PATCH '/whip/s/{token}'>"
    record.auth = "Bearer sk_abcdefghijklmnop"
    assert RedactSecrets().filter(record)
    line = KeyValueFormatter("%(message)s").format(record)
    assert token not in line
    assert "sk_abcdefghijklmnop" not in line
    assert "/whep/s/<token>" in line
    assert "/whip/s/<token>" in line

    malformed = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", ("one",), None)
    assert RedactSecrets().filter(malformed)  # left for logging to report


def test_redacting_twice_changes_nothing() -> None:
    """An access log record is redacted twice (its path, then the record): still one
    ``<token>``, not ``<token>>``."""
    once = redact("DELETE /whep/demo/" + "T" * 43 + " 200")
    assert once == "DELETE /whep/demo/<token> 200"
    assert redact(once) == once


def test_suspicious_requests_are_warnings_without_a_traceback() -> None:
    try:
        raise ValueError("Invalid HTTP_HOST header: 'evil.example'.")
    except ValueError as exc:
        record = logging.LogRecord(
            "django.security.DisallowedHost", logging.ERROR, __file__, 1, str(exc), None, None
        )
        record.exc_info = (type(exc), exc, exc.__traceback__)
    assert SuspiciousRequestsAsWarnings().filter(record)
    assert (record.levelno, record.levelname, record.exc_info) == (logging.WARNING, "WARNING", None)

    failure = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "boom", None, None)
    assert SuspiciousRequestsAsWarnings().filter(failure)
    assert failure.levelno == logging.ERROR  # a server failure stays an error


def test_no_handler_writes_a_session_url_unredacted_under_debug(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Django's own default handler for the ``django`` loggers (on under DEBUG, so in
    ``make run``) printed "Not Found: /whep/<slug>/<token>" a second time, unfiltered."""
    token = "T" * 43
    try:
        configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)  # as django.setup()
        with override_settings(DEBUG=True):
            logging.getLogger("django.request").warning("Not Found: %s", f"/whep/s/{token}")
        err = capsys.readouterr().err
    finally:
        configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    assert "/whep/s/<token>" in err
    assert token not in err
