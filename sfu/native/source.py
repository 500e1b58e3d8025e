"""What ``sfu.native``'s C loop is built from: the declarations shared by ``forward.c``
and cffi, its sizes, and a digest of them all (no cffi needed to read it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRATCH_BYTES = 60000
TRAILER_BYTES = 144  # libsrtp's SRTP_MAX_TRAILER_LEN
MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
# what the sockets of one batch's viewers refused (EAGAIN), kept for Python to queue
SPILL_BYTES = 2**20

# Shared by the C source and cffi's declarations.
STRUCTS = """
struct onair_mapping {
    uint32_t first_in_seq;
    uint32_t seq_offset;
    uint32_t ts_offset;
    uint32_t last_out_seq;
    uint32_t last_out_ts;
    double last_out_time;
    int vp8;
    uint32_t picture_id_offset;
    uint32_t tl0_offset;
    uint32_t last_out_picture_id;
    uint32_t last_out_tl0;
};

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
    struct onair_mapping *mapping;
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
"""
STRUCTS += f"""
struct onair_handoff {{
    int target;
    int resume;
    int spill_offset;
    int spill_count;
    int spill_sizes[{MAX_SEGMENTS}];
}};
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


def source_digest() -> str:
    """What the module is built from, so that a module built from an older ``forward.c`` is
    not loaded by newer Python code (``sfu.native`` checks ``onair_source()``)."""
    digest = hashlib.sha256()
    for part in (
        DECLARATIONS,
        (HERE / "forward.c").read_text(),
        repr((SCRATCH_BYTES, TRAILER_BYTES, MAX_SEGMENTS, SPILL_BYTES)),
    ):
        digest.update(part.encode())
    return digest.hexdigest()[:32]
