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

HERE = Path(__file__).resolve().parent
MODULE = "_forward"

# Shared by the C source and cffi's declarations.
STRUCTS = """
struct onair_target {
    int fd;
    int gso;
    uint32_t ssrc;
    void *session;
    int (*protect)(void *session, void *packet, int *length);
    unsigned char address[28];
    int address_length;
    long (*send_hook)(void *hook_data, void *data, int length, int segment);
    void *hook_data;
    int blocked;
    uint32_t first_in_seq;
    uint32_t seq_offset;
    uint32_t ts_offset;
    uint32_t last_out_seq;
    uint32_t last_out_ts;
    double last_out_time;
    uint64_t ntp_time;
    uint32_t rtp_timestamp;
    uint64_t packets_sent;
    uint64_t rtp_bytes;
    uint64_t payload_bytes;
    uint64_t protected_bytes;
    uint64_t spill_dropped;
};

struct onair_batch {
    int count;
    const unsigned char *data;
    const int *offsets;
    const int *lengths;
    const int *payload_lengths;
    const uint32_t *sequence_numbers;
    const uint32_t *timestamps;
};

struct onair_handoff {
    int target;
    int resume;
    int spill_offset;
    int spill_count;
    int spill_sizes[64];
};
"""

DECLARATIONS = (
    STRUCTS
    + """
int onair_forward(struct onair_target *const *targets, int count, const struct onair_batch *batch,
                  double now, uint64_t ntp_time, struct onair_handoff *handoffs);
void onair_spilled(int offset, int length, unsigned char *out);
long onair_discard(void *hook_data, void *data, int length, int segment);
"""
)

SCRATCH_BYTES = 60000
TRAILER_BYTES = 144  # libsrtp's SRTP_MAX_TRAILER_LEN
MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
# what the sockets of one batch's viewers refused (EAGAIN), kept for Python to queue
SPILL_BYTES = 2**20


def builder() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(DECLARATIONS)
    ffi.set_source(
        f"sfu.native.{MODULE}",
        "#include <stdint.h>\n"
        f"#define ONAIR_SCRATCH_BYTES {SCRATCH_BYTES}\n"
        f"#define ONAIR_TRAILER_BYTES {TRAILER_BYTES}\n"
        f"#define ONAIR_MAX_SEGMENTS {MAX_SEGMENTS}\n"
        f"#define ONAIR_SPILL_BYTES {SPILL_BYTES}\n" + STRUCTS + (HERE / "forward.c").read_text(),
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
