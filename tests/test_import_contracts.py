"""The import contracts (``make imports``, pyproject's ``[tool.importlinter]``) hold on this
tree and break when the SFU boundary is crossed: a copy of the tree with one forbidden
import added fails them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "sfu",
    "signaling",
    "broadcast",
    "viewers",
    "recordings",
    "chat",
    "webhooks",
    "onair",
    "testpeers",
    "bench",
)
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.so")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("sfu/heap.py", "import django", "sfu imports no Django"),
        ("sfu/router.py", "import channels.layers", "sfu imports no Django"),
        ("sfu/ice.py", "import onair.conf", "sfu imports no Django"),
        ("broadcast/selectors.py", "import sfu.router", "only signaling.gateway imports sfu"),
        ("recordings/services.py", "import sfu.recorder", "only signaling.gateway imports sfu"),
        ("signaling/consumers.py", "from sfu import Router", "only signaling.gateway imports sfu"),
    ],
)
def test_a_boundary_crossing_breaks_a_contract(
    tree: Path, module: str, line: str, contract: str
) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = _lint(tree)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(contract in row for row in broken), result.stdout
