"""``tests.daphne.LogWatch``, which fails an e2e test whose server logged an ERROR."""

from __future__ import annotations

from pathlib import Path

from tests.daphne import LogWatch

RECORD = "2026-01-01 00:00:00,000 {level} sfu.tasks {message}\n"


def test_only_errors_written_since_the_last_look_are_reported(tmp_path: Path) -> None:
    daphne, worker = tmp_path / "daphne.log", tmp_path / "runsfu-1.log"
    daphne.write_text(RECORD.format(level="ERROR", message="before the test"))
    logs = [daphne]
    watch = LogWatch(lambda: logs)

    with daphne.open("a") as log:
        log.write(RECORD.format(level="WARNING", message="a warning is fine"))
    assert watch.errors() == []

    with daphne.open("a") as log:
        log.write(RECORD.format(level="ERROR", message="background task failed"))
        log.write("Traceback (most recent call last):\n  RuntimeError: boom\n")
    worker.write_text(RECORD.format(level="CRITICAL", message="a process started meanwhile"))
    logs.append(worker)
    errors = watch.errors()
    assert len(errors) == 2
    assert "background task failed" in errors[0]
    assert "before the test" not in errors[0]
    assert "a process started meanwhile" in errors[1]

    assert watch.errors() == []
