/* OnAir's forwarding loop in C: one producer's batch of packets to every viewer of a
 * forward group, in one call from Python.
 *
 * For each viewer (a struct onair_target, set up by sfu.rtp_sender.DirectRtpSender, for
 * a viewer whose stream has started on a keyframe): map each packet's sequence number and
 * timestamp into the viewer's stream (the rules of sfu.munger.RtpMunger, whose state is the
 * struct onair_mapping the target points to: the same memory whichever loop forwards);
 * copy the group's serialized packet into a scratch buffer, patch its header and
 * SRTP-protect it in place with the viewer's libsrtp session (pylibsrtp's own srtp_protect,
 * passed in as a pointer); send the datagrams with UDP GSO: one sendmsg per run of
 * same-size datagrams (the last of a run may be shorter), one datagram at a time where the
 * kernel refuses GSO. Nothing blocks: when a viewer's socket would block, the datagrams it
 * did not take are copied to a spill buffer and the viewer is handed back to Python, which
 * queues them on asyncio's transport and forwards that viewer itself until the transport
 * has drained.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

/* Bounds are written `length <= CAPACITY - offset` (offsets are never negative, nor near
 * INT_MAX), never `offset + length <= CAPACITY`, which can overflow a signed int. */

/* a hand-back lists what one transmit refused: at most a run of ONAIR_MAX_SEGMENTS */
_Static_assert(sizeof(((struct onair_handoff *)0)->spill_sizes) ==
                   sizeof(int) * ONAIR_MAX_SEGMENTS,
               "spill_sizes holds ONAIR_MAX_SEGMENTS sizes");

#define SEQ_MASK 0xFFFFu
#define SEQ_HALF 0x8000u
#define SEQ_WINDOW 0x4000u
#define PICTURE_ID_MASK 0x7FFFu
#define PICTURE_ID_HALF 0x4000u
#define TL0_MASK 0xFFu
#define TL0_HALF 0x80u

static __thread unsigned char scratch[ONAIR_SCRATCH_BYTES + ONAIR_TRAILER_BYTES];
static __thread unsigned char spill[ONAIR_SPILL_BYTES];

static void put16(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* The twin of RtpMunger.map_vp8 (sfu/munger.py) past a re-base: map the picture ID and
 * TL0PICIDX of a VP8 payload descriptor (RFC 7741) in place. */
static void map_vp8(struct onair_mapping *mapping, unsigned char *payload, int size) {
    int pos = 2, picture_pos = -1, tl0_pos = -1, wide = 0;
    unsigned char extension;
    if (size < 3 || !(payload[0] & 0x80))
        return;
    extension = payload[1];
    if (extension & 0x80) {
        picture_pos = pos;
        wide = payload[pos] & 0x80;
        pos += wide ? 2 : 1;
    }
    if (extension & 0x40) {
        tl0_pos = pos;
        pos += 1;
    }
    if (pos > size)
        return;
    if (picture_pos >= 0) {
        uint32_t picture_id = wide ? ((uint32_t)(payload[picture_pos] & 0x7F) << 8) |
                                         payload[picture_pos + 1]
                                   : (uint32_t)(payload[picture_pos] & 0x7F);
        uint32_t out_id = (picture_id + mapping->picture_id_offset) & PICTURE_ID_MASK;
        if (wide) {
            payload[picture_pos] = (unsigned char)(0x80 | (out_id >> 8));
            payload[picture_pos + 1] = (unsigned char)out_id;
        } else {
            out_id &= 0x7F;
            payload[picture_pos] = (unsigned char)out_id;
        }
        if (((out_id - mapping->last_out_picture_id) & PICTURE_ID_MASK) < PICTURE_ID_HALF)
            mapping->last_out_picture_id = out_id;
    }
    if (tl0_pos >= 0) {
        uint32_t out_tl0 = (payload[tl0_pos] + mapping->tl0_offset) & TL0_MASK;
        payload[tl0_pos] = (unsigned char)out_tl0;
        if (((out_tl0 - mapping->last_out_tl0) & TL0_MASK) < TL0_HALF)
            mapping->last_out_tl0 = out_tl0;
    }
}

/* One send: `length` bytes from `data`, cut into `segment`-byte datagrams (0: one
 * datagram). Returns 0, or the errno of a refusal. */
static int send_datagrams(struct onair_target *target, unsigned char *data, int length,
                          int segment) {
    union {
        char buffer[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } control;
    struct iovec iov;
    struct msghdr message;
    if (target->address_length < 0 ||
        (size_t)target->address_length > sizeof target->address)
        return EINVAL;
    if (target->send_hook) {
        long taken = target->send_hook(target->hook_data, data, length, segment);
        return taken < 0 ? (int)-taken : 0;
    }
    iov.iov_base = data;
    iov.iov_len = (size_t)length;
    memset(&message, 0, sizeof message);
    message.msg_name = target->address;
    message.msg_namelen = (socklen_t)target->address_length;
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    if (segment) {
        struct cmsghdr *cmsg;
        uint16_t size = (uint16_t)segment;
        memset(&control, 0, sizeof control);
        message.msg_control = control.buffer;
        message.msg_controllen = sizeof control.buffer;
        cmsg = CMSG_FIRSTHDR(&message);
        cmsg->cmsg_level = SOL_UDP;
        cmsg->cmsg_type = UDP_SEGMENT;
        cmsg->cmsg_len = CMSG_LEN(sizeof size);
        memcpy(CMSG_DATA(cmsg), &size, sizeof size);
    }
    return sendmsg(target->fd, &message, MSG_DONTWAIT) < 0 ? errno : 0;
}

/* Send the datagrams of sizes[0..count) from the start of the scratch buffer, in order:
 * one send per run of same-size datagrams (the last of a run may be shorter), split as
 * sfu.rtp_sender.gso_run splits them for the Python loop (tests/sfu/test_native.py checks
 * that both split the same sizes alike). Returns the index of the first datagram the socket
 * would not take (EAGAIN), or count; *offset is where that datagram starts. */
static int transmit(struct onair_target *target, const int *sizes, int count, int *offset_out) {
    int index = 0, offset = 0;
    while (index < count) {
        int size = sizes[index];
        int end = offset + size;
        int segments = target->gso ? ONAIR_MAX_SEGMENTS : 1;
        int last = index + segments < count ? index + segments : count;
        int run = index + 1;
        int error;
        while (run < last && sizes[run] == size) {
            end += size;
            run++;
        }
        if (run < last && sizes[run] < size) {
            end += sizes[run];
            run++;
        }
        error = send_datagrams(target, scratch + offset, end - offset, run - index > 1 ? size : 0);
        if (error == EAGAIN || error == EWOULDBLOCK || error == EINTR) {
            *offset_out = offset;
            return index;
        }
        if (error && run - index > 1) { /* GSO refused: from here on, one datagram at a time */
            target->gso = 0;
            continue;
        }
        /* sent, or the socket is gone (the viewer left): what is left of the run is moot */
        offset = end;
        index = run;
    }
    *offset_out = offset;
    return count;
}

/* The socket refused sizes[sent..count): spill them and hand the viewer back to Python,
 * which resumes the batch at `resume`. When the spill buffer is full the datagrams are
 * dropped, as a full socket buffer would drop them, and counted in spill_dropped. */
static void hand_back(struct onair_target *target, const int *sizes, int sent, int count,
                      int offset, int resume, struct onair_handoff *handoff, int *spilled) {
    int total = 0, i;
    for (i = sent; i < count; i++)
        total += sizes[i];
    handoff->resume = resume;
    handoff->spill_offset = *spilled;
    handoff->spill_count = 0;
    if (total <= ONAIR_SPILL_BYTES - *spilled) {
        memcpy(spill + *spilled, scratch + offset, (size_t)total);
        *spilled += total;
        handoff->spill_count = count - sent;
        memcpy(handoff->spill_sizes, sizes + sent, sizeof(int) * (size_t)(count - sent));
    } else {
        target->spill_dropped += (uint64_t)(count - sent);
    }
    target->blocked = 1;
}

/* What a viewer was sent in a batch makes its next sender report's time pair. */
static void sent_some(struct onair_target *target, int packets, uint64_t ntp_time,
                      uint32_t last_sent_ts) {
    if (packets) {
        target->ntp_time = ntp_time;
        target->rtp_timestamp = last_sent_ts;
    }
}

/* Forward a batch to one viewer. Returns 1 when the viewer was handed back. */
static int forward_one(struct onair_target *target, const struct onair_batch *batch, double now,
                       uint64_t ntp_time, struct onair_handoff *handoff, int *spilled) {
    struct onair_mapping *const mapping = target->mapping;
    int sizes[ONAIR_MAX_SEGMENTS];
    int count = 0, offset = 0, index, sent, sent_offset, packets = 0;
    uint32_t last_sent_ts = 0;
    if (!mapping)
        return 0; /* no mapping to forward by */
    for (index = 0; index < batch->count; index++) {
        uint32_t sequence_number = batch->sequence_numbers[index];
        uint32_t since_first = (sequence_number - mapping->first_in_seq) & SEQ_MASK;
        uint32_t out_seq, out_ts;
        int length = batch->lengths[index], protected_length;
        unsigned char *packet;
        /* the twin of RtpMunger.map (sfu/munger.py) past a re-base: keep them the same
         * (tests/sfu/test_native.py runs both on the same packets) */
        if (since_first >= SEQ_HALF)
            continue; /* older than the current source's first forwarded packet */
        if (since_first > SEQ_WINDOW) /* the window follows the stream round its 16 bits */
            mapping->first_in_seq = (sequence_number - SEQ_WINDOW) & SEQ_MASK;
        out_seq = (sequence_number + mapping->seq_offset) & SEQ_MASK;
        out_ts = batch->timestamps[index] + mapping->ts_offset;
        if (((out_seq - mapping->last_out_seq) & SEQ_MASK) < SEQ_HALF) {
            mapping->last_out_seq = out_seq;
            mapping->last_out_ts = out_ts;
            mapping->last_out_time = now;
        }
        if (length > ONAIR_SCRATCH_BYTES || length < 12)
            continue;
        /* offset may exceed the scratch by the last packet's SRTP trailer (its room) */
        if (length > ONAIR_SCRATCH_BYTES - offset || count == ONAIR_MAX_SEGMENTS) {
            sent = transmit(target, sizes, count, &sent_offset);
            if (sent < count) {
                sent_some(target, packets, ntp_time, last_sent_ts);
                hand_back(target, sizes, sent, count, sent_offset, index, handoff, spilled);
                return 1;
            }
            count = offset = 0;
        }
        packet = scratch + offset;
        memcpy(packet, batch->data + batch->offsets[index], (size_t)length);
        put16(packet + 2, out_seq);
        put32(packet + 4, out_ts);
        put32(packet + 8, target->ssrc);
        if (mapping->vp8 && batch->payload_lengths[index] <= length)
            map_vp8(mapping, packet + length - batch->payload_lengths[index],
                    batch->payload_lengths[index]);
        protected_length = length;
        if (target->protect(target->session, packet, &protected_length) != 0 ||
            protected_length < length || protected_length - length > ONAIR_TRAILER_BYTES)
            continue;
        sizes[count++] = protected_length;
        offset += protected_length;
        last_sent_ts = out_ts;
        packets++;
        target->packets_sent++;
        target->rtp_bytes += (uint64_t)length;
        target->payload_bytes += (uint64_t)batch->payload_lengths[index];
        target->protected_bytes += (uint64_t)protected_length;
    }
    sent_some(target, packets, ntp_time, last_sent_ts);
    if (count) {
        sent = transmit(target, sizes, count, &sent_offset);
        if (sent < count) {
            hand_back(target, sizes, sent, count, sent_offset, batch->count, handoff, spilled);
            return 1;
        }
    }
    return 0;
}

/* Forward a batch to each of targets[0..count). Viewers handed back to Python (their socket
 * would block) are listed in handoffs; returns how many. */
int onair_forward(struct onair_target *const *targets, int count, const struct onair_batch *batch,
                  double now, uint64_t ntp_time, struct onair_handoff *handoffs) {
    int handed = 0, spilled = 0, i;
    for (i = 0; i < count; i++) {
        if (targets[i]->blocked)
            continue; /* Python forwards it until its transport has drained */
        if (forward_one(targets[i], batch, now, ntp_time, &handoffs[handed], &spilled)) {
            handoffs[handed].target = i;
            handed++;
        }
    }
    return handed;
}

/* Copy `length` spilled bytes from `offset` (see struct onair_handoff) to `out`. */
void onair_spilled(int offset, int length, unsigned char *out) {
    if (offset >= 0 && length >= 0 && offset <= ONAIR_SPILL_BYTES &&
        length <= ONAIR_SPILL_BYTES - offset)
        memcpy(out, spill + offset, (size_t)length);
}

/* A send hook that takes every datagram and sends none: with it, python -m bench.hotpath
 * measures the loop without the kernel. */
long onair_discard(void *hook_data, void *data, int length, int segment) {
    (void)hook_data;
    (void)data;
    (void)segment;
    return length;
}
