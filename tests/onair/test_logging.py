import logging

from onair.logging import KeyValueFormatter


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
