import logging

from onair.logging import KeyValueFormatter, RedactSecrets


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
