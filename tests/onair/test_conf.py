"""onair.conf: every ONAIR setting read, typed, validated and documented from one place."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from onair.conf import (
    IcePolicy,
    OnAirSettings,
    SfuMode,
    all_settings,
    environment_overrides,
    onair_settings,
    settings_from,
    settings_table,
    with_table,
)

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_DOC = ROOT / "docs" / "SETTINGS.md"


def test_the_settings_doc_is_the_generated_table() -> None:
    document = SETTINGS_DOC.read_text()
    assert with_table(document) == document, "run `python -m onair.conf` to rewrite it"
    for info in all_settings():
        assert f"| `{info.env}` | `{info.key}` |" in settings_table()


def test_every_setting_has_a_key_a_variable_and_a_description() -> None:
    keys = [info.key for info in all_settings()]
    assert len(keys) == len(set(keys))
    assert {"TURN_SECRET", "ICE_TRANSPORT_POLICY", "SFU_PIPE_HOST", "NATIVE_FORWARDING"} <= set(
        keys
    )
    assert all(info.doc and info.env == f"ONAIR_{info.key}" for info in all_settings())


def test_no_key_set_means_every_default() -> None:
    assert settings_from({}) == OnAirSettings()


def test_the_environment_gives_only_the_variables_set() -> None:
    assert environment_overrides({}) == {}
    overrides = environment_overrides(
        {
            "ONAIR_ALLOW_SIGNUP": "off",
            "ONAIR_TURN_URLS": "turn:a.example:3478, turns:a.example:443",
            "ONAIR_TURN_TTL_SECONDS": "600",
            "ONAIR_PUBLISHER_GRACE_SECONDS": "0.5",
            "ONAIR_SFU_MODE": "cluster",
            "ONAIR_UDP_PORT_RANGE": "50000-50999",
            "UNRELATED": "1",
        }
    )
    assert overrides == {
        "ALLOW_SIGNUP": False,
        "TURN_URLS": ["turn:a.example:3478", "turns:a.example:443"],
        "TURN_TTL_SECONDS": 600,
        "PUBLISHER_GRACE_SECONDS": 0.5,
        "SFU_MODE": "cluster",
        "UDP_PORT_RANGE": "50000-50999",
    }
    conf = settings_from(overrides)
    assert conf.allow_signup is False
    assert conf.ice.turn_urls == ("turn:a.example:3478", "turns:a.example:443")
    assert conf.ice.turn_ttl_seconds == 600
    assert conf.ice.udp_port_range == (50000, 50999)
    assert conf.publisher_grace_seconds == 0.5
    assert conf.sfu_mode is SfuMode.CLUSTER


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ONAIR_ALLOW_SIGNUP", "maybe", "is not a boolean"),
        ("ONAIR_MAX_SESSIONS", "many", "invalid literal"),
        ("ONAIR_PUBLISHER_GRACE_SECONDS", "abc", "ONAIR_PUBLISHER_GRACE_SECONDS='abc' is invalid"),
    ],
)
def test_a_malformed_variable_is_refused(variable: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        environment_overrides({variable: value})


def test_the_sfu_serves_on_one_udp_port_by_default() -> None:
    assert settings_from({}).ice.udp_mux_port == 10000
    assert settings_from({"UDP_MUX_PORT": "0"}).ice.udp_mux_port == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"STUN_URLS": ["turn:wrong.example"]}, "must start with"),
        ({"TURN_TTL_SECONDS": -1}, "positive"),
        ({"ICE_TRANSPORT_POLICY": "none"}, "is not a valid IcePolicy"),
        ({"UDP_PORT_RANGE": "80-90"}, "UDP_PORT_RANGE"),
        ({"UDP_MUX_PORT": 80}, "ONAIR_UDP_MUX_PORT=80 is invalid: must be 0 .off. or a port"),
        ({"SFU_MODE": "clustered"}, "ONAIR_SFU_MODE='clustered' is invalid: .* SfuMode"),
        ({"ICE_TRANSPORT_POLICY": "bogus"}, "^ONAIR_ICE_TRANSPORT_POLICY='bogus' is invalid"),
        ({"MAX_SESSIONS": -3}, "ONAIR_MAX_SESSIONS=-3 is invalid: must be 0 or more"),
        ({"CONNECT_TIMEOUT_SECONDS": -1}, "ONAIR_CONNECT_TIMEOUT_SECONDS=-1 is invalid"),
        ({"PUBLISHER_GRACE_SECONDS": float("nan")}, "ONAIR_PUBLISHER_GRACE_SECONDS=nan"),
        ({"PUBLISHER_GRACE_SECONDS": "inf"}, "must be a number of seconds"),
    ],
)
def test_an_invalid_value_is_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from(raw)


def test_a_changed_onair_dict_is_read_again() -> None:
    assert onair_settings().ice.viewer_policy is IcePolicy.ALL
    with override_settings(ONAIR={"ICE_TRANSPORT_POLICY": "relay"}):
        assert onair_settings().ice.viewer_policy is IcePolicy.RELAY
    assert onair_settings().ice.viewer_policy is IcePolicy.ALL


def test_an_invalid_setting_stops_the_server_as_it_starts() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ONAIR_")}
    environ.update(
        DJANGO_SETTINGS_MODULE="onair.settings.test", ONAIR_TURN_URLS="stun:wrong.example"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import onair.asgi"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "must start with" in result.stderr
