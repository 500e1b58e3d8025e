"""Builds ``sfu.native._forward``, the C forwarding loop (``forward.c``), with cffi.

    python -m sfu.native.build [--strict]

``make run``, ``make test`` and ``make bench`` run it. It needs a C compiler and Python's
headers; without them it says so and exits with 0 (1 with ``--strict``), and the SFU
forwards with its Python loop instead (same packets, about twice the CPU per viewer).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

import cffi

from sfu.native.source import (
    DECLARATIONS,
    HERE,
    MAX_SEGMENTS,
    SCRATCH_BYTES,
    SPILL_BYTES,
    STRUCTS,
    TRAILER_BYTES,
    source_digest,
)

MODULE = "_forward"


def builder() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(DECLARATIONS + "const char *onair_source(void);\n")
    ffi.set_source(
        f"sfu.native.{MODULE}",
        "#include <stdint.h>\n"
        f"#define ONAIR_SCRATCH_BYTES {SCRATCH_BYTES}\n"
        f"#define ONAIR_TRAILER_BYTES {TRAILER_BYTES}\n"
        f"#define ONAIR_MAX_SEGMENTS {MAX_SEGMENTS}\n"
        f"#define ONAIR_SPILL_BYTES {SPILL_BYTES}\n"
        + STRUCTS
        + (HERE / "forward.c").read_text()
        + f'const char *onair_source(void) {{ return "{source_digest()}"; }}\n',
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror"],
    )
    return ffi


def build() -> Path:
    """Compile the module next to this file; returns its path."""
    with tempfile.TemporaryDirectory() as temporary:
        built = Path(builder().compile(tmpdir=temporary, verbose=False))
        target = HERE / built.name
        # a new file renamed over the old: a process that loaded the old one keeps it
        staged = target.with_suffix(".new")
        shutil.copyfile(built, staged)
        os.replace(staged, target)
    return target


def main() -> int:
    strict = "--strict" in sys.argv[1:]  # fail instead (CI, where the C loop is tested)
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        print("sfu.native: no Python headers; forwarding uses the Python loop", file=sys.stderr)
        return 1 if strict else 0
    try:
        path = build()
    except Exception as error:  # no compiler, or it failed: the Python loop still works
        print(f"sfu.native: not built ({error}); forwarding uses the Python loop", file=sys.stderr)
        return 1 if strict else 0
    print(f"sfu.native: built {path.relative_to(HERE.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
