"""The recipe's systemd units and environment file, checked without running a service:
``systemd-analyze verify`` on the units (paths substituted for this checkout), and the
environment file's variables documented and accepted by the production settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daphne import ROOT
from tests.deploy.files import DEPLOY, environment_file, find_program, render

UNITS = DEPLOY / "systemd"
ENV_EXAMPLE = DEPLOY / "onair.env.example"
# What a unit reads from the environment file besides settings: runsfu's worker count.
UNIT_VARIABLES = {"RUNSFU_WORKERS"}


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    analyze = find_program("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    rendered = []
    for unit in sorted(UNITS.glob("*.service")):
        text = render(
            unit,
            {
                "/srv/onair/.venv/bin/python": sys.executable,
                "WorkingDirectory=/srv/onair": f"WorkingDirectory={ROOT}",
                "ReadWritePaths=/srv/onair/var": f"ReadWritePaths={tmp_path}",
                "EnvironmentFile=/etc/onair/onair.env": f"EnvironmentFile={ENV_EXAMPLE}",
            },
        )
        # A template is verified as one of its instances.
        path = tmp_path / unit.name.replace("@.", "@8000.")
        path.write_text(text)
        rendered.append(path)
    assert {path.name for path in rendered} == {"onair-web@8000.service", "onair-sfu.service"}
    result = subprocess.run(
        [analyze, "verify", *map(str, rendered)], capture_output=True, text=True, timeout=60
    )
    # It reports a unit's problems (an unknown key, a value it cannot parse, a missing
    # program) on its output, and often with exit status 0: nothing may name our units.
    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if any(p.name in line for p in rendered)]
    assert result.returncode == 0, output
    assert ours == [], output


def test_the_web_unit_runs_onair_serve_behind_the_proxy() -> None:
    unit = (UNITS / "onair-web@.service").read_text()
    command = re.search(r"^ExecStart=(.+)$", unit, re.MULTILINE)
    assert command is not None
    assert command.group(1).split()[1:] == [
        "-m", "onair.serve", "-b", "127.0.0.1", "-p", "%i", "--proxy-headers",
        "onair.asgi:application",
    ]  # fmt: skip
    upstream = (DEPLOY / "nginx" / "onair.conf").read_text()
    assert "server 127.0.0.1:8000;" in upstream


def _example_variables() -> dict[str, str]:
    """The file's variables, and those of its commented-out examples (``#NAME=value``)."""
    variables = environment_file(ENV_EXAMPLE)
    for line in ENV_EXAMPLE.read_text().splitlines():
        example = re.fullmatch(r"#([A-Z][A-Z0-9_]*)=(\S*)", line)
        if example:
            variables[example.group(1)] = example.group(2)
    return variables


def test_the_environment_file_sets_documented_settings_only() -> None:
    settings_doc = (ROOT / "docs" / "SETTINGS.md").read_text()
    documented = {
        name
        for first_cell in re.findall(r"^\| ([^|]+) \|", settings_doc, re.MULTILINE)
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", first_cell)
    }
    unknown = set(_example_variables()) - documented - UNIT_VARIABLES
    assert unknown == set(), f"not in docs/SETTINGS.md: {sorted(unknown)}"
    services = (UNITS / "onair-sfu.service").read_text()
    assert "${RUNSFU_WORKERS}" in services


def test_the_environment_file_loads_the_production_settings() -> None:
    """Its values as shipped (the commented-out examples included) are valid: the
    production settings load with them, and OnAir's own settings parse."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ONAIR_"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(_example_variables())
    probe = (
        "import django; django.setup(); from django.conf import settings; "
        "from onair.conf import onair_settings; s = onair_settings(); "
        "print(settings.SETTINGS_MODULE, s.sfu_mode.value, s.ice.udp_port_range, s.ice.public_ip, "
        "sep='|')"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split("|") == [
        "onair.settings.production", "embedded", "(40000, 40999)", "203.0.113.7",
    ]  # fmt: skip
