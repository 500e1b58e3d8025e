"""The rig's routers behave as the NAT types they are named after (RFC 4787 terms)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.nat.matrix import REPO
from tests.nat.rig import CLIENT_SITES, TURN_IP, Rig, Site, rig_namespaces, unavailable_reason

# site → (endpoint-independent mapping, endpoint-independent filtering)
EXPECTED = {
    "cone": (True, True),
    "prc": (True, False),
    "sym": (False, False),
}
REFLECTOR_IP = next(site.wan_ip for site in CLIENT_SITES if site.name == "none")


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"NAT rig unavailable: {reason}")
    with Rig() as built:
        reflectors = [
            subprocess.Popen(
                built.exec_argv(node, [sys.executable, "-m", "tests.nat.probe", "reflect"]),
                cwd=REPO,
                stdout=subprocess.PIPE,
                text=True,
            )
            for node in ("none", "turn")
        ]
        for reflector in reflectors:
            assert reflector.stdout is not None
            assert reflector.stdout.readline().strip() == "ready"
        yield built
        for reflector in reflectors:
            reflector.kill()
            reflector.wait()


@pytest.mark.parametrize("site", [site for site in CLIENT_SITES if site.name in EXPECTED])
def test_nat_behaviour(rig: Rig, site: Site) -> None:
    argv = [sys.executable, "-m", "tests.nat.probe", "probe", REFLECTOR_IP, TURN_IP]
    output = subprocess.run(
        rig.exec_argv(site.name, argv), cwd=REPO, capture_output=True, text=True, check=True
    )
    result = json.loads(output.stdout)
    first, second = result["mapped"]
    assert first[0] == second[0] == site.wan_ip
    assert (first == second, result["poked"]) == EXPECTED[site.name]


def test_down_leaves_nothing_behind() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"NAT rig unavailable: {reason}")
    rig = Rig(run_id="cleanup-check")
    rig.up()
    assert any(name.startswith(rig.ns("")) for name in rig_namespaces())
    rig.down()
    assert not any(name.startswith(rig.ns("")) for name in rig_namespaces())
