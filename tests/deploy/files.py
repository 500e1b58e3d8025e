"""The deployment recipe's files (``deploy/``) as the tests use them: the shipped text with
only ports, paths and certificates substituted (each substitution must still apply, so a
test never runs a file of its own), a self-signed certificate, and the environment file."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.daphne import ROOT

DEPLOY = ROOT / "deploy"


def render(path: Path, substitutions: dict[str, str]) -> str:
    """The file's text with each key replaced by its value; fails if a key is not in it."""
    text = path.read_text()
    for old, new in substitutions.items():
        assert old in text, f"{old!r} is no longer in {path.relative_to(ROOT)}"
        text = text.replace(old, new)
    return text


def unavailable(reason: str) -> NoReturn:
    """Skip, saying why; under CI (``CI=true``), where the recipe must be checked, fail."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}, and CI=true requires it")
    pytest.skip(reason)


def find_program(name: str) -> str | None:
    """The path of ``name``, also in /usr/sbin (outside a non-root user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def program(name: str, install: str) -> str:
    """The path of ``name``, or the tests are unavailable, saying how to install it."""
    found = find_program(name)
    if found is None:
        unavailable(f"{name} is not installed ({install})")
    return found


def self_signed_certificate(directory: Path, host: str = "localhost") -> tuple[Path, Path]:
    """A certificate for ``host`` and 127.0.0.1, valid for a day, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def environment_file(path: Path) -> dict[str, str]:
    """A systemd ``EnvironmentFile`` as systemd reads the subset it uses: ``NAME=value``
    lines, ``#`` comment lines, blank lines."""
    variables = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, equals, value = line.partition("=")
        assert equals, f"{path.name}:{number}: not NAME=value: {line!r}"
        assert name.isidentifier(), f"{path.name}:{number}: not a variable's name: {line!r}"
        assert " #" not in value, f"{path.name}:{number}: systemd would keep the comment"
        variables[name] = value
    return variables
