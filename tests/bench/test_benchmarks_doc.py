"""docs/BENCHMARKS.md stays reference: short, the latest generated results, no run history."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "BENCHMARKS.md"


def test_the_benchmarks_doc_is_short_reference() -> None:
    text = DOC.read_text()
    assert len(text.splitlines()) < 200
    # One generated section of each kind: the bench rewrites them, it does not append runs.
    for marker in (
        "bench:results:start",
        "cluster-sweep:begin",
        "nack-flood:begin",
        "simulcast:begin",
        "recording:begin",
        "chat:begin",
        "signaling:begin",
        "flash-crowd:begin",
    ):
        assert text.count(marker) == 1
    assert not re.search(r"\bStep \d", text)  # narratives of how it was built
    commit = r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"
    assert not re.search(commit, text)  # commit hashes: history stays in git
