/* The media node's per-packet send loop in C: one call per frame and subscriber (media/sending.py).
 *
 * send_frame() does, for every packet of one forwarded frame to one subscriber, what the Python loop in
 * FrameSender._send does: the 12-byte RTP header (first byte, payload type with the marker on the last packet,
 * sequence number, timestamp, SSRC), the per-subscriber prefix (header extensions and VP8 payload descriptor),
 * the shared payload chunk; the packet goes into the sender's RTP history (what NACKs are answered from), is
 * protected with libsrtp's srtp_protect (reached through pylibsrtp's own session and function pointer: the
 * same library, the same session state), and the frame's packets leave with one sendmmsg() on the ICE pair's
 * UDP socket.
 *
 * send_frames() does the same for a list of such calls (one publisher frame to all its subscribers) in one call.
 * send_lanes() does it for a publisher frame's subscribers from each one's lane (a tuple made once per connection)
 * and its FrameSender's own state: it makes the prefixes (abs-send-time, VP8 descriptor), the timestamp, and
 * advances the sequence number, picture id and the counters the Python loop keeps (media/sending.py, _sent).
 *
 * Nothing here keeps state between calls: sequence numbers, counters and the history live in Python
 * (send_lanes reads and writes them there).
 * Whatever this cannot do (a packet too long for the session's buffer, an SRTP error, a send that would
 * block or fails) is handed back to the Python caller, which then does exactly what its own loop does.
 * Called with the GIL held, never released: the static buffers below are used by one call at a time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* Linux 4.18: UDP generic segmentation offload */
#endif

#define MAX_BATCH 64        /* packets per sendmmsg (a larger frame goes in several) */
#define SLOT_SIZE 2048      /* bytes per protected packet: >= pylibsrtp's 1500-byte session buffer */
#define SRTP_MAX_TRAILER 144 /* libsrtp's SRTP_MAX_TRAILER_LEN */
#define GSO_MAX_SEGMENTS 64  /* the kernel's UDP_MAX_SEGMENTS (older kernels) */
#define GSO_MAX_BYTES 65000  /* what one UDP datagram (before segmentation) may carry, with room to spare */

typedef int (*srtp_protect_fn)(void *ctx, void *rtp_hdr, int *len_ptr);

static unsigned char slots[MAX_BATCH][SLOT_SIZE];
static struct mmsghdr messages[MAX_BATCH];
static struct iovec vectors[MAX_BATCH];
static int first_packet[MAX_BATCH]; /* the batch's first packet in each message */
static union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
} controls[MAX_BATCH];

/* Messages for packets [from, batch): one per packet, or with gso one per run of equal-size packets (the last of
 * a run may be shorter), which the kernel splits into those same datagrams (UDP_SEGMENT). Returns how many. */
static int
build_messages(int from, int batch, const int *lengths, int gso, const struct sockaddr *to, socklen_t to_len)
{
    int count = 0;
    int p = from;
    while (p < batch) {
        int q = p + 1;
        int size = lengths[p];
        long total = size;
        if (gso) {
            while (q < batch && q - p < GSO_MAX_SEGMENTS && total + lengths[q] <= GSO_MAX_BYTES
                   && lengths[q] <= size) {
                total += lengths[q];
                q++;
                if (lengths[q - 1] < size)
                    break; /* a shorter packet ends the run */
            }
        }
        struct msghdr *h = &messages[count].msg_hdr;
        memset(&messages[count], 0, sizeof(messages[count]));
        h->msg_name = (void *)to;
        h->msg_namelen = to_len;
        h->msg_iov = &vectors[p];
        h->msg_iovlen = (size_t)(q - p);
        if (q - p > 1) {
            memset(&controls[count], 0, sizeof(controls[count]));
            h->msg_control = controls[count].buf;
            h->msg_controllen = sizeof(controls[count].buf);
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t segment = (uint16_t)size;
            memcpy(CMSG_DATA(c), &segment, sizeof(segment));
        }
        first_packet[count] = p;
        count++;
        p = q;
    }
    return count;
}

/* Protected packets [from, to) of the current batch as a list of bytes (handed back unsent). */
static PyObject *
unsent_list(int from, int to, int *lengths)
{
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (int i = from; i < to; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)slots[i], lengths[i]);
        if (b == NULL || PyList_Append(list, b) < 0) {
            Py_XDECREF(b);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(b);
    }
    return list;
}

PyDoc_STRVAR(send_frame_doc,
"send_frame(fd, sockaddr, session, protect, limit, history, history_size, chunks, head, rest, first_byte,\n"
"           payload_type, sequence, timestamp, ssrc, gso) -> None | tuple[list[bytes], int, int, bool]\n"
"\n"
"Build, record, protect and send one frame's RTP packets (see media/_fastpath.pyi).");

static PyObject *send_core(int fd, const struct sockaddr *to, socklen_t to_len, void *session,
                           srtp_protect_fn protect, Py_ssize_t limit, PyObject *history, long history_size,
                           PyObject *chunks, const char *head_bytes, Py_ssize_t head_len, const char *rest_bytes,
                           Py_ssize_t rest_len, long first_byte, long payload_type, long sequence,
                           unsigned long timestamp, unsigned long ssrc, int gso);

/* send_frame's arguments, checked; then send_core. */
static PyObject *
send_one(PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 16) {
        PyErr_SetString(PyExc_TypeError, "send_frame takes 16 arguments");
        return NULL;
    }
    long fd_long = PyLong_AsLong(args[0]);
    if (fd_long == -1 && PyErr_Occurred())
        return NULL;
    if (fd_long < 0 || fd_long > 0x7FFFFFFF) {
        PyErr_SetString(PyExc_ValueError, "fd out of range");
        return NULL;
    }
    int fd = (int)fd_long;
    PyObject *sockaddr = args[1];
    if (!PyBytes_Check(sockaddr) || PyBytes_GET_SIZE(sockaddr) > (Py_ssize_t)sizeof(struct sockaddr_storage)) {
        PyErr_SetString(PyExc_TypeError, "sockaddr must be bytes of a struct sockaddr");
        return NULL;
    }
    void *session = PyLong_AsVoidPtr(args[2]);
    if (session == NULL && PyErr_Occurred())
        return NULL;
    srtp_protect_fn protect = (srtp_protect_fn)PyLong_AsVoidPtr(args[3]);
    if (protect == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "protect must be a function address");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[4]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (limit > SLOT_SIZE - SRTP_MAX_TRAILER)
        limit = SLOT_SIZE - SRTP_MAX_TRAILER;
    PyObject *history = args[5];
    if (!PyDict_Check(history)) {
        PyErr_SetString(PyExc_TypeError, "history must be a dict");
        return NULL;
    }
    long history_size = PyLong_AsLong(args[6]);
    if (history_size <= 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "history_size must be positive");
        return NULL;
    }
    PyObject *chunks = args[7], *head = args[8], *rest = args[9];
    if (!PyList_Check(chunks) || !PyBytes_Check(head) || !PyBytes_Check(rest)) {
        PyErr_SetString(PyExc_TypeError, "chunks must be a list, head and rest bytes");
        return NULL;
    }
    long first_byte = PyLong_AsLong(args[10]);
    long payload_type = PyLong_AsLong(args[11]);
    long sequence = PyLong_AsLong(args[12]);
    unsigned long timestamp = PyLong_AsUnsignedLongMask(args[13]);
    unsigned long ssrc = PyLong_AsUnsignedLongMask(args[14]);
    int gso = PyObject_IsTrue(args[15]);
    if (gso < 0 || PyErr_Occurred())
        return NULL;
    return send_core(fd, (const struct sockaddr *)PyBytes_AS_STRING(sockaddr), (socklen_t)PyBytes_GET_SIZE(sockaddr),
                     session, protect, limit, history, history_size, chunks, PyBytes_AS_STRING(head),
                     PyBytes_GET_SIZE(head), PyBytes_AS_STRING(rest), PyBytes_GET_SIZE(rest), first_byte,
                     payload_type, sequence, timestamp, ssrc, gso);
}

/* The loop itself, for send_frame and send_lanes: chunks is a list (its items are checked to be bytes), the prefixes
 * are raw bytes. Returns None, the hand-back tuple, or NULL with an exception set. */
static PyObject *
send_core(int fd, const struct sockaddr *to, socklen_t to_len, void *session, srtp_protect_fn protect,
          Py_ssize_t limit, PyObject *history, long history_size, PyObject *chunks, const char *head_bytes,
          Py_ssize_t head_len, const char *rest_bytes, Py_ssize_t rest_len, long first_byte, long payload_type,
          long sequence, unsigned long timestamp, unsigned long ssrc, int gso)
{
    int refused = 0; /* the socket refused segmentation offload: sent without it, and the caller stops asking */
    Py_ssize_t count = PyList_GET_SIZE(chunks);
    Py_ssize_t last = count - 1;
    int lengths[MAX_BATCH];
    unsigned char header[12];
    header[0] = (unsigned char)first_byte;
    header[8] = (unsigned char)(ssrc >> 24);
    header[9] = (unsigned char)(ssrc >> 16);
    header[10] = (unsigned char)(ssrc >> 8);
    header[11] = (unsigned char)ssrc;
    header[4] = (unsigned char)(timestamp >> 24);
    header[5] = (unsigned char)(timestamp >> 16);
    header[6] = (unsigned char)(timestamp >> 8);
    header[7] = (unsigned char)timestamp;

    Py_ssize_t index = 0;
    while (index < count) {
        int batch = 0;
        int stopped = 0; /* a packet this cannot protect: Python takes over from it */
        for (; batch < MAX_BATCH && index + batch < count; batch++) {
            Py_ssize_t i = index + batch;
            PyObject *chunk = PyList_GET_ITEM(chunks, i);
            if (!PyBytes_Check(chunk)) {
                PyErr_SetString(PyExc_TypeError, "chunks must be bytes");
                return NULL;
            }
            const char *prefix = i == 0 ? head_bytes : rest_bytes;
            Py_ssize_t prefix_len = i == 0 ? head_len : rest_len, chunk_len = PyBytes_GET_SIZE(chunk);
            Py_ssize_t size = 12 + prefix_len + chunk_len;
            long seq = (sequence + i) & 0xFFFF;
            header[1] = (unsigned char)(i == last ? (0x80 | payload_type) : payload_type);
            header[2] = (unsigned char)(seq >> 8);
            header[3] = (unsigned char)seq;
            PyObject *raw = PyBytes_FromStringAndSize(NULL, size);
            if (raw == NULL)
                return NULL;
            char *out = PyBytes_AS_STRING(raw);
            memcpy(out, header, 12);
            memcpy(out + 12, prefix, prefix_len);
            memcpy(out + 12 + prefix_len, PyBytes_AS_STRING(chunk), chunk_len);
            PyObject *key = PyLong_FromLong(seq % history_size);
            if (key == NULL || PyDict_SetItem(history, key, raw) < 0) {
                Py_XDECREF(key);
                Py_DECREF(raw);
                return NULL;
            }
            Py_DECREF(key);
            Py_DECREF(raw);
            if (size > limit) {
                stopped = 1;
                break;
            }
            memcpy(slots[batch], out, size);
            int length = (int)size;
            if (protect(session, slots[batch], &length) != 0) {
                stopped = 1;
                break;
            }
            lengths[batch] = length;
            vectors[batch].iov_base = slots[batch];
            vectors[batch].iov_len = (size_t)length;
        }
        int message_count = build_messages(0, batch, lengths, gso, to, to_len);
        int sent_messages = 0;
        int sent = 0; /* packets of the batch sent */
        while (sent_messages < message_count) {
            int n = sendmmsg(fd, messages + sent_messages, (unsigned int)(message_count - sent_messages), 0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (gso && messages[sent_messages].msg_hdr.msg_iovlen > 1
                    && (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT || errno == EOPNOTSUPP)) {
                    /* No segmentation offload here (an old kernel, a device without checksum offload): the
                     * same packets again, one datagram each. */
                    gso = 0;
                    refused = 1;
                    message_count = build_messages(first_packet[sent_messages], batch, lengths, 0, to, to_len);
                    sent_messages = 0;
                    continue;
                }
                break; /* would block, or an error: Python's sendto decides (buffers, or error_received) */
            }
            sent_messages += n;
        }
        sent = sent_messages < message_count ? first_packet[sent_messages] : batch;
        if (sent < batch || stopped) {
            PyObject *unsent = unsent_list(sent, batch, lengths);
            if (unsent == NULL)
                return NULL;
            /* (protected but unsent packets, index of the first packet not protected, packets in all, refused) */
            return Py_BuildValue("(NnnO)", unsent, index + batch, count, refused ? Py_True : Py_False);
        }
        index += batch;
    }
    if (refused)
        return Py_BuildValue("(NnnO)", PyList_New(0), count, count, Py_True);
    Py_RETURN_NONE;
}

static PyObject *
send_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return send_one(args, nargs);
}

/* The exception just raised, taken out of the error indicator with its traceback, as a result in its own right (one
 * subscriber's failure is its own: the batch hands it back in that subscriber's place and goes on); NULL if none. */
static PyObject *
raised_as_result(void)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL)
        PyException_SetTraceback(value, traceback);
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
}

PyDoc_STRVAR(send_frames_doc,
"send_frames(jobs) -> list[None | tuple[list[bytes], int, int, bool] | Exception]\n"
"\n"
"send_frame(*job) for every 16-tuple of jobs, in order, in one call: one publisher frame to all its subscribers\n"
"(see media/_fastpath.pyi). A job that raises does not stop the others: its exception is its result.");

static PyObject *
send_frames(PyObject *self, PyObject *jobs)
{
    if (!PyList_Check(jobs)) {
        PyErr_SetString(PyExc_TypeError, "jobs must be a list of tuples");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(jobs);
    PyObject *results = PyList_New(count);
    if (results == NULL)
        return NULL;
    for (Py_ssize_t j = 0; j < count; j++) {
        PyObject *job = PyList_GET_ITEM(jobs, j);
        PyObject *result;
        if (!PyTuple_Check(job)) {
            PyErr_SetString(PyExc_TypeError, "a job must be a tuple");
            result = NULL;
        } else {
            Py_INCREF(job); /* the list may change under a callback (a dict key's __eq__ never runs here, but) */
            result = send_one(&PyTuple_GET_ITEM(job, 0), PyTuple_GET_SIZE(job));
            Py_DECREF(job);
        }
        if (result == NULL && (result = raised_as_result()) == NULL) {
            Py_DECREF(results);
            return NULL;
        }
        PyList_SET_ITEM(results, j, result);
    }
    return results;
}

/* Attribute names send_lanes reads and writes (interned once, in PyInit__fastpath). */
enum {
    A_SEQUENCE,
    A_PICTURE_ID,
    A_TIMESTAMP_ORIGIN,
    A_FRAMES_SENT,
    A_PACKETS_SENT,
    A_NATIVE_FRAMES,
    A_NTP_TIMESTAMP,
    A_RTP_TIMESTAMP,
    A_OCTET_COUNT,
    A_PACKET_COUNT,
    A_COUNT
};
static const char *attribute_names[A_COUNT] = {
    "_sequence",
    "_picture_id",
    "_timestamp_origin",
    "frames_sent",
    "packets_sent",
    "native_frames",
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__octet_count",
    "_RTCRtpSender__packet_count",
};
static PyObject *attributes[A_COUNT];

#define LANE_FIELDS 15
#define EXT_MAX 256 /* longest header-extension block a lane takes (media/sending.py checks it first) */

static int
get_long(PyObject *owner, int name, long *out)
{
    PyObject *value = PyObject_GetAttr(owner, attributes[name]);
    if (value == NULL)
        return -1;
    *out = PyLong_AsLong(value);
    Py_DECREF(value);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* Set owner.<name> to value, taking the reference to value (NULL: the error of whatever made it). */
static int
set_stolen(PyObject *owner, PyObject *name, PyObject *value)
{
    if (value == NULL)
        return -1;
    int rc = PyObject_SetAttr(owner, name, value);
    Py_DECREF(value);
    return rc;
}

static int
set_object(PyObject *owner, int name, PyObject *value)
{
    return set_stolen(owner, attributes[name], value);
}

static int
add_long_named(PyObject *owner, PyObject *name, long long amount)
{
    PyObject *value = PyObject_GetAttr(owner, name);
    if (value == NULL)
        return -1;
    PyObject *delta = PyLong_FromLongLong(amount);
    if (delta == NULL) {
        Py_DECREF(value);
        return -1;
    }
    PyObject *sum = PyNumber_Add(value, delta);
    Py_DECREF(value);
    Py_DECREF(delta);
    return set_stolen(owner, name, sum);
}

/* owner.<attributes[name]> += amount */
static int
add_long(PyObject *owner, int name, long long amount)
{
    return add_long_named(owner, attributes[name], amount);
}

/* One lane: (config, pts, chunks), config being the 15-tuple media/sending.py's FrameSender._lane_config makes:
 * (fd, sockaddr, session, protect, limit, history, history_size, payload_type, ssrc, gso, extensions,
 *  abs_send_time_offset, vp8, owner, sender). */
static PyObject *send_lane_config(PyObject *config, unsigned long long pts, PyObject *chunks, unsigned long long ntp);

static PyObject *
send_lane(PyObject *entry, unsigned long long ntp)
{
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3) {
        PyErr_SetString(PyExc_TypeError, "a lane entry is (config, pts, chunks)");
        return NULL;
    }
    unsigned long long pts = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(entry, 1));
    if (pts == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    return send_lane_config(PyTuple_GET_ITEM(entry, 0), pts, PyTuple_GET_ITEM(entry, 2), ntp);
}

/* send_lane with its entry taken apart: the lane's config, the frame's pts in the sender's clock (mod 2**64), its
 * chunks. */
static PyObject *
send_lane_config(PyObject *config, unsigned long long pts, PyObject *chunks, unsigned long long ntp)
{
    if (!PyTuple_Check(config) || PyTuple_GET_SIZE(config) != LANE_FIELDS || !PyList_Check(chunks)) {
        PyErr_SetString(PyExc_TypeError, "a lane's config must be a 15-tuple and its chunks a list");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(chunks);
    if (count == 0)
        Py_RETURN_NONE; /* nothing to send: as the Python loop, no state changes */
    PyObject *const *c = &PyTuple_GET_ITEM(config, 0);
    long fd = PyLong_AsLong(c[0]);
    void *session = PyLong_AsVoidPtr(c[2]);
    srtp_protect_fn protect = (srtp_protect_fn)PyLong_AsVoidPtr(c[3]);
    Py_ssize_t limit = PyLong_AsSsize_t(c[4]);
    long history_size = PyLong_AsLong(c[6]);
    long payload_type = PyLong_AsLong(c[7]);
    unsigned long ssrc = PyLong_AsUnsignedLongMask(c[8]);
    int gso = PyObject_IsTrue(c[9]);
    long abs_offset = PyLong_AsLong(c[11]);
    int vp8 = PyObject_IsTrue(c[12]);
    PyObject *owner = c[13], *sender = c[14];
    if (PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > 0x7FFFFFFF || protect == NULL || history_size <= 0 || gso < 0 || vp8 < 0
        || !PyBytes_Check(c[1]) || PyBytes_GET_SIZE(c[1]) > (Py_ssize_t)sizeof(struct sockaddr_storage)
        || !PyDict_Check(c[5]) || !PyBytes_Check(c[10]) || PyBytes_GET_SIZE(c[10]) > EXT_MAX
        || abs_offset < -1 || (abs_offset >= 0 && abs_offset + 3 > PyBytes_GET_SIZE(c[10]))) {
        PyErr_SetString(PyExc_ValueError, "a lane's config is out of range");
        return NULL;
    }
    if (limit > SLOT_SIZE - SRTP_MAX_TRAILER)
        limit = SLOT_SIZE - SRTP_MAX_TRAILER;
    long sequence, picture_id = 0;
    if (get_long(owner, A_SEQUENCE, &sequence) < 0 || (vp8 && get_long(owner, A_PICTURE_ID, &picture_id) < 0))
        return NULL;
    PyObject *origin_object = PyObject_GetAttr(owner, attributes[A_TIMESTAMP_ORIGIN]);
    if (origin_object == NULL)
        return NULL;
    unsigned long long origin = PyLong_AsUnsignedLongLongMask(origin_object);
    Py_DECREF(origin_object);
    if (origin == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    unsigned long timestamp = (unsigned long)((origin + pts) & 0xFFFFFFFFULL);

    /* The prefixes, as FrameSender._send makes them: the extension block with this frame's abs-send-time, then (VP8)
     * the 4-byte payload descriptor with the subscriber's picture id, S=1 on the first packet only. */
    unsigned char head[EXT_MAX + 4], rest[EXT_MAX + 4];
    Py_ssize_t ext_len = PyBytes_GET_SIZE(c[10]);
    memcpy(head, PyBytes_AS_STRING(c[10]), ext_len);
    if (abs_offset >= 0) {
        unsigned long abs24 = (unsigned long)((ntp >> 14) & 0xFFFFFF);
        head[abs_offset] = (unsigned char)(abs24 >> 16);
        head[abs_offset + 1] = (unsigned char)(abs24 >> 8);
        head[abs_offset + 2] = (unsigned char)abs24;
    }
    Py_ssize_t prefix_len = ext_len;
    long long octets = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *chunk = PyList_GET_ITEM(chunks, i);
        if (!PyBytes_Check(chunk)) {
            PyErr_SetString(PyExc_TypeError, "chunks must be bytes");
            return NULL;
        }
        octets += PyBytes_GET_SIZE(chunk);
    }
    if (vp8) {
        long pid = 0x8000 | picture_id;
        head[ext_len] = 0x90;
        head[ext_len + 1] = 0x80;
        head[ext_len + 2] = (unsigned char)(pid >> 8);
        head[ext_len + 3] = (unsigned char)pid;
        prefix_len = ext_len + 4;
        octets += 4 * (long long)count;
    }
    memcpy(rest, head, prefix_len);
    if (vp8)
        rest[ext_len] = 0x80;
    long first_byte = ext_len ? 0x90 : 0x80;

    PyObject *left = send_core((int)fd, (const struct sockaddr *)PyBytes_AS_STRING(c[1]),
                               (socklen_t)PyBytes_GET_SIZE(c[1]), session, protect, limit, c[5], history_size, chunks,
                               (const char *)head, prefix_len, (const char *)rest, prefix_len, first_byte, payload_type,
                               sequence, timestamp, ssrc, gso);
    if (left == NULL)
        return NULL;
    /* What FrameSender._sent does after a frame (all its packets, also those handed back), and the picture id. */
    if (set_object(owner, A_SEQUENCE, PyLong_FromLong((sequence + count) & 0xFFFF)) < 0
        || (vp8 && set_object(owner, A_PICTURE_ID, PyLong_FromLong((picture_id + 1) & 0x7FFF)) < 0)
        || add_long(owner, A_FRAMES_SENT, 1) < 0 || add_long(owner, A_PACKETS_SENT, count) < 0
        || add_long(owner, A_NATIVE_FRAMES, 1) < 0
        || set_object(sender, A_NTP_TIMESTAMP, PyLong_FromUnsignedLongLong(ntp)) < 0
        || set_object(sender, A_RTP_TIMESTAMP, PyLong_FromUnsignedLong(timestamp)) < 0
        || add_long(sender, A_OCTET_COUNT, octets) < 0 || add_long(sender, A_PACKET_COUNT, count) < 0) {
        Py_DECREF(left);
        return NULL;
    }
    if (left == Py_None)
        return left;
    /* Handed back: (unsent, start, count, refused) + (head, rest, first_byte, sequence, timestamp) to finish it. */
    PyObject *more = Py_BuildValue("(y#y#lkk)", (const char *)head, prefix_len, (const char *)rest, prefix_len,
                                   first_byte, (unsigned long)sequence, timestamp);
    if (more == NULL) {
        Py_DECREF(left);
        return NULL;
    }
    PyObject *all = PySequence_Concat(left, more);
    Py_DECREF(left);
    Py_DECREF(more);
    return all;
}

PyDoc_STRVAR(send_lanes_doc,
"send_lanes(entries, ntp) -> list[None | tuple | Exception]\n"
"\n"
"One publisher frame to all its subscribers' lanes in one call (see media/_fastpath.pyi).");

static PyObject *
send_lanes(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "send_lanes takes a list of entries and an NTP time");
        return NULL;
    }
    unsigned long long ntp = PyLong_AsUnsignedLongLongMask(args[1]);
    if (ntp == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *entries = args[0];
    Py_ssize_t count = PyList_GET_SIZE(entries);
    PyObject *results = PyList_New(count);
    if (results == NULL)
        return NULL;
    for (Py_ssize_t j = 0; j < count && j < PyList_GET_SIZE(entries); j++) {
        PyObject *entry = PyList_GET_ITEM(entries, j);
        Py_INCREF(entry);
        PyObject *result = send_lane(entry, ntp);
        Py_DECREF(entry);
        if (result == NULL && (result = raised_as_result()) == NULL) {
            Py_DECREF(results);
            return NULL;
        }
        PyList_SET_ITEM(results, j, result);
    }
    for (Py_ssize_t j = PyList_GET_SIZE(entries); j < count; j++) {
        Py_INCREF(Py_None); /* (the list shrank under a callback: nothing was sent for these) */
        PyList_SET_ITEM(results, j, Py_None);
    }
    return results;
}

/* ---- The hot path: a publisher frame to the subscribers whose decisions are all foregone ----------------------
 *
 * fan_hot() takes the consumers of one publisher frame (media/fanout.py) and, for each ForwardedTrack in the steady
 * state, does in C what ForwardedTrack.prepare, FrameSender.send_batched and NativeBatch.run would do for it in
 * Python: the outgoing pts, the lane's send, the counters. The steady state is read from the objects themselves at
 * every frame, never cached, so whatever Python changes (a pause, a gate closing, pacing, a new ICE pair, a queued
 * frame, a full socket buffer) sends that consumer back to Python at the next frame: a consumer is hot only when
 * prepare() would return (sender, pts, clock rate) with no other effect than the outgoing timeline, and
 * _ready_lane() would return the same lane. Everything else ("cold") is handed back, in order, for the Python loop.
 */

enum {
    H_ENDED,
    H_PAUSED,
    H_PENDING,
    H_SENDER,
    H_ENABLED,
    H_SENDABLE,
    H_GATE,
    H_OPEN,
    H_QUEUE,
    H_RESTART,
    H_TOP,
    H_PACE,
    H_PACED,
    H_HOT,
    H_LANE,
    H_STATE,
    H_TX_SRTP,
    H_OFFSET,
    H_LAST_OUT,
    H_LAST_OUT_TIME,
    H_CLOCK_RATE,
    H_VP8,
    H_CODEC_KEY,
    H_KEYFRAME_SENT,
    H_FORWARDED,
    H_HOLD_TIMES,
    H_TIMESTAMP,
    H_PAYLOADS,
    H_ARRIVAL,
    H_HOT_CHUNKS,
    H_WRITE_BUFFER,
    H_IS_CLOSING,
    H_APPEND,
    H_COUNT
};
static const char *hot_names[H_COUNT] = {
    "_MediaStreamTrack__ended", /* aiortc's MediaStreamTrack: readyState is "ended" when it is true */
    "paused",
    "_pending",
    "_sender",
    "_enabled", /* aiortc's RTCRtpSender: its direction lets it send (media.aiortc_compat.sender_enabled) */
    "_sendable",
    "gate",
    "open",
    "_queue",
    "_restart_sequence",
    "top_priority",
    "pace_bps",
    "_paced",
    "_hot",
    "_lane",
    "_state",   /* aiortc's RTCDtlsTransport (media.aiortc_compat.SenderInternals.link) */
    "_tx_srtp", /* idem */
    "_offset",
    "_last_out",
    "_last_out_time",
    "_clock_rate",
    "_vp8",
    "_codec_key",
    "_keyframe_sent",
    "forwarded",
    "hold_times",
    "timestamp",
    "payloads",
    "arrival",
    "_hot_chunks",
    "get_write_buffer_size",
    "is_closing",
    "append",
};
static PyObject *hot_attributes[H_COUNT];
static PyObject *hot_track_type;   /* media.forwarding.ForwardedTrack (configure_hot) */
static PyObject *hot_connected;    /* aiortc's State.CONNECTED (configure_hot) */
static PyObject *hot_vp8_key;      /* "vp8": the key of a VP8 frame's chunks in frame.payloads (media.sending) */
static PyObject *one_object;       /* 1: the ICE component whose nominated pair carries the media */

/* owner.<name> (a new reference), or NULL with no error set if it is missing or fails: the consumer is cold. */
static PyObject *
hot_get(PyObject *owner, int name)
{
    PyObject *value = PyObject_GetAttr(owner, hot_attributes[name]);
    if (value == NULL)
        PyErr_Clear();
    return value;
}

/* Whether owner.<name> is exactly the object want (a borrowed comparison; a missing attribute is not). */
static int
hot_is(PyObject *owner, int name, PyObject *want)
{
    PyObject *value = hot_get(owner, name);
    if (value == NULL)
        return 0;
    Py_DECREF(value);
    return value == want;
}

/* len(owner.<name>) == 0 (a missing attribute or a failing len: not). */
static int
hot_empty(PyObject *owner, int name)
{
    PyObject *value = hot_get(owner, name);
    if (value == NULL)
        return 0;
    Py_ssize_t size = PyObject_Size(value);
    Py_DECREF(value);
    if (size < 0) {
        PyErr_Clear();
        return 0;
    }
    return size == 0;
}

/* Python's floor division of a by b (b > 0). */
static long long
floor_div(long long a, long long b)
{
    long long q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

typedef struct {
    PyObject *sender;     /* the consumer's FrameSender (new reference) */
    PyObject *lane;       /* its lane config (new reference) */
    long long pts;        /* the frame's pts on the consumer's outgoing timeline */
    long long sender_pts; /* the same in the sender's clock */
} hot_plan;

/* Whether consumer may take this frame through the hot path; fills plan (references to release) when it may. */
static int
hot_ready(PyObject *consumer, int keyframe, long long source_pts, hot_plan *plan)
{
    if ((PyObject *)Py_TYPE(consumer) != hot_track_type)
        return 0;
    if (!hot_is(consumer, H_ENDED, Py_False) || !hot_is(consumer, H_PAUSED, Py_False)
        || !hot_is(consumer, H_PENDING, Py_None) || !hot_is(consumer, H_SENDABLE, Py_True)
        || !hot_is(consumer, H_RESTART, Py_False) || !hot_is(consumer, H_TOP, Py_False)
        || !hot_is(consumer, H_PACE, Py_None) || !hot_empty(consumer, H_QUEUE))
        return 0;
    PyObject *gate = hot_get(consumer, H_GATE);
    if (gate == NULL)
        return 0;
    /* A video's gate must be open, and a keyframe of a gated video goes through Python (RepairHold.keyframe_sent). */
    int gate_ok = gate == Py_None || (!keyframe && hot_is(gate, H_OPEN, Py_True));
    Py_DECREF(gate);
    if (!gate_ok)
        return 0;
    PyObject *offset = hot_get(consumer, H_OFFSET);
    if (offset == NULL)
        return 0;
    int overflow = 0;
    long long offset_value = PyLong_Check(offset) ? PyLong_AsLongLongAndOverflow(offset, &overflow) : 0;
    int offset_ok = PyLong_Check(offset) && !overflow && !(offset_value == -1 && PyErr_Occurred());
    Py_DECREF(offset);
    if (!offset_ok) {
        PyErr_Clear();
        return 0; /* None (a new publisher: Python sets the timeline), or beyond 64 bits */
    }
    PyObject *sender = hot_get(consumer, H_SENDER);
    if (sender == NULL)
        return 0;
    if (sender == Py_None || !hot_empty(sender, H_PACED)) {
        Py_DECREF(sender);
        return 0;
    }
    PyObject *aiortc_sender = hot_get(sender, H_SENDER);
    int enabled = aiortc_sender != NULL && hot_is(aiortc_sender, H_ENABLED, Py_True);
    Py_XDECREF(aiortc_sender);
    PyObject *hot = enabled ? hot_get(sender, H_HOT) : NULL;
    PyObject *lane = hot != NULL ? hot_get(sender, H_LANE) : NULL;
    /* _hot: (lane, (dtls, nominated pairs, SRTP session, ICE pair), transport), made by FrameSender._ready_lane */
    int ok = hot != NULL && lane != NULL && PyTuple_Check(hot) && PyTuple_GET_SIZE(hot) == 3
             && PyTuple_GET_ITEM(hot, 0) == lane && lane != Py_None;
    if (ok) {
        PyObject *link = PyTuple_GET_ITEM(hot, 1), *transport = PyTuple_GET_ITEM(hot, 2);
        ok = PyTuple_Check(link) && PyTuple_GET_SIZE(link) == 4 && PyDict_Check(PyTuple_GET_ITEM(link, 1));
        if (ok) {
            PyObject *dtls = PyTuple_GET_ITEM(link, 0);
            PyObject *pair = PyDict_GetItemWithError(PyTuple_GET_ITEM(link, 1), one_object);
            if (pair == NULL)
                PyErr_Clear();
            ok = pair != NULL && pair == PyTuple_GET_ITEM(link, 3) && hot_is(dtls, H_STATE, hot_connected)
                 && hot_is(dtls, H_TX_SRTP, PyTuple_GET_ITEM(link, 2));
        }
        if (ok) {
            /* Nothing waits in the socket's buffer (what would block went there: it goes first), and it is open. */
            PyObject *size = PyObject_CallMethodNoArgs(transport, hot_attributes[H_WRITE_BUFFER]);
            ok = size != NULL && PyLong_Check(size) && PyLong_AsLong(size) == 0;
            Py_XDECREF(size);
            if (ok) {
                PyObject *closing = PyObject_CallMethodNoArgs(transport, hot_attributes[H_IS_CLOSING]);
                ok = closing == Py_False;
                Py_XDECREF(closing);
            }
            if (PyErr_Occurred())
                PyErr_Clear();
        }
    }
    Py_XDECREF(hot);
    long rate = 0, sender_rate = 0;
    if (ok) {
        PyObject *r = hot_get(consumer, H_CLOCK_RATE), *sr = hot_get(sender, H_CLOCK_RATE);
        rate = r != NULL && PyLong_Check(r) ? PyLong_AsLong(r) : 0;
        sender_rate = sr != NULL && PyLong_Check(sr) ? PyLong_AsLong(sr) : 0;
        Py_XDECREF(r);
        Py_XDECREF(sr);
        if (PyErr_Occurred())
            PyErr_Clear();
        ok = rate > 0 && sender_rate > 0;
    }
    if (!ok) {
        Py_XDECREF(lane);
        Py_DECREF(sender);
        return 0;
    }
    long long pts;
    if (__builtin_add_overflow(source_pts, offset_value, &pts)) {
        Py_DECREF(lane);
        Py_DECREF(sender);
        return 0;
    }
    long long sender_pts = pts;
    if (rate != sender_rate) {
        long long scaled;
        if (__builtin_mul_overflow(pts, (long long)sender_rate, &scaled)) {
            Py_DECREF(lane);
            Py_DECREF(sender);
            return 0;
        }
        sender_pts = floor_div(scaled, rate);
    }
    plan->sender = sender;
    plan->lane = lane;
    plan->pts = pts;
    plan->sender_pts = sender_pts;
    return 1;
}

/* The frame's chunks for a sender: from frame.payloads by its codec, made by the sender if no one has yet. */
static PyObject *
hot_chunks(PyObject *sender, PyObject *payloads, PyObject *frame)
{
    PyObject *vp8 = hot_get(sender, H_VP8);
    if (vp8 == NULL)
        return NULL;
    PyObject *key = vp8 == Py_True ? Py_NewRef(hot_vp8_key) : hot_get(sender, H_CODEC_KEY);
    Py_DECREF(vp8);
    if (key == NULL)
        return NULL;
    PyObject *chunks = PyDict_GetItemWithError(payloads, key);
    Py_DECREF(key);
    if (chunks != NULL && PyList_Check(chunks)) {
        Py_INCREF(chunks);
        return chunks;
    }
    if (PyErr_Occurred())
        PyErr_Clear();
    chunks = PyObject_CallMethodOneArg(sender, hot_attributes[H_HOT_CHUNKS], frame);
    if (chunks != NULL && !PyList_Check(chunks)) {
        Py_DECREF(chunks);
        PyErr_SetString(PyExc_TypeError, "_hot_chunks must return a list");
        return NULL;
    }
    return chunks;
}

static double
clock_seconds(clockid_t clock)
{
    struct timespec now;
    clock_gettime(clock, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

PyDoc_STRVAR(configure_hot_doc,
"configure_hot(track_type, connected) -> None\n"
"\n"
"The consumer type fan_hot serves (ForwardedTrack) and aiortc's DTLS state CONNECTED (see media/_fastpath.pyi).");

static PyObject *
configure_hot(PyObject *self, PyObject *args)
{
    PyObject *track_type, *connected;
    if (!PyArg_ParseTuple(args, "O!O", &PyType_Type, &track_type, &connected))
        return NULL;
    Py_INCREF(track_type);
    Py_INCREF(connected);
    Py_XSETREF(hot_track_type, track_type);
    Py_XSETREF(hot_connected, connected);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(fan_hot_doc,
"fan_hot(consumers, frame, keyframe, ntp, now) -> None | tuple[list, list]\n"
"\n"
"One publisher frame to every consumer in the steady state, in C; the others handed back (see media/_fastpath.pyi).");

static PyObject *
fan_hot(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "fan_hot takes a list of consumers, a frame, keyframe, an NTP and a monotonic time");
        return NULL;
    }
    if (hot_track_type == NULL || hot_connected == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_hot was not called");
        return NULL;
    }
    PyObject *consumers = args[0], *frame = args[1];
    int keyframe = PyObject_IsTrue(args[2]);
    if (keyframe < 0)
        return NULL;
    unsigned long long ntp = PyLong_AsUnsignedLongLongMask(args[3]);
    if (ntp == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    double now_mono = PyFloat_AsDouble(args[4]); /* time.monotonic(): what _pts keeps in _last_out_time */
    if (now_mono == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *timestamp = PyObject_GetAttr(frame, hot_attributes[H_TIMESTAMP]);
    if (timestamp == NULL)
        return NULL;
    int overflow = 0;
    long long source_pts = PyLong_Check(timestamp) ? PyLong_AsLongLongAndOverflow(timestamp, &overflow) : 0;
    int pts_ok = PyLong_Check(timestamp) && !overflow && !(source_pts == -1 && PyErr_Occurred());
    Py_DECREF(timestamp);
    PyErr_Clear();
    PyObject *payloads = PyObject_GetAttr(frame, hot_attributes[H_PAYLOADS]);
    if (payloads == NULL)
        return NULL;
    PyObject *arrival = PyObject_GetAttr(frame, hot_attributes[H_ARRIVAL]);
    if (arrival == NULL) {
        Py_DECREF(payloads);
        return NULL;
    }
    double arrived = PyFloat_AsDouble(arrival);
    Py_DECREF(arrival);
    if (arrived == -1.0 && PyErr_Occurred()) {
        Py_DECREF(payloads);
        return NULL;
    }
    PyObject *cold = PyList_New(0), *handed = PyList_New(0), *sent = PyList_New(0);
    if (cold == NULL || handed == NULL || sent == NULL || !PyDict_Check(payloads))
        goto fail;
    Py_ssize_t count = PyList_GET_SIZE(consumers);
    for (Py_ssize_t j = 0; j < count && j < PyList_GET_SIZE(consumers); j++) {
        PyObject *consumer = PyList_GET_ITEM(consumers, j);
        Py_INCREF(consumer);
        hot_plan plan;
        if (!pts_ok || !hot_ready(consumer, keyframe, source_pts, &plan)) {
            int rc = PyList_Append(cold, consumer);
            Py_DECREF(consumer);
            if (rc < 0)
                goto fail;
            continue;
        }
        PyObject *chunks = hot_chunks(plan.sender, payloads, frame);
        if (chunks == NULL) {
            /* Python's loop makes the same call (shared_payloads) and meets the same failure where it is handled. */
            PyErr_Clear();
            Py_DECREF(plan.sender);
            Py_DECREF(plan.lane);
            int rc = PyList_Append(cold, consumer);
            Py_DECREF(consumer);
            if (rc < 0)
                goto fail;
            continue;
        }
        /* What prepare() (_pts) and send_batched() do before the send. */
        PyObject *last_out = PyLong_FromLongLong(plan.pts), *last_time = PyFloat_FromDouble(now_mono);
        int rc = (last_out == NULL || last_time == NULL
                  || PyObject_SetAttr(consumer, hot_attributes[H_LAST_OUT], last_out) < 0
                  || PyObject_SetAttr(consumer, hot_attributes[H_LAST_OUT_TIME], last_time) < 0
                  || PyObject_SetAttr(plan.sender, hot_attributes[H_KEYFRAME_SENT], Py_None) < 0)
                     ? -1
                     : 0;
        Py_XDECREF(last_out);
        Py_XDECREF(last_time);
        PyObject *left = rc < 0 ? NULL : send_lane_config(plan.lane, (unsigned long long)plan.sender_pts, chunks, ntp);
        if (left == NULL)
            left = raised_as_result();
        if (left == NULL) {
            Py_DECREF(chunks);
            Py_DECREF(plan.sender);
            Py_DECREF(plan.lane);
            Py_DECREF(consumer);
            goto fail;
        }
        if (left == Py_None) {
            Py_DECREF(left);
            rc = PyList_Append(sent, consumer);
        } else {
            /* (consumer, sender, what send_lanes would return, chunks): Python finishes it (_finish_lane). */
            PyObject *item = PyTuple_Pack(4, consumer, plan.sender, left, chunks);
            Py_DECREF(left);
            rc = item == NULL ? -1 : PyList_Append(handed, item);
            Py_XDECREF(item);
        }
        Py_DECREF(chunks);
        Py_DECREF(plan.sender);
        Py_DECREF(plan.lane);
        Py_DECREF(consumer);
        if (rc < 0)
            goto fail;
    }
    /* What fan_out does for each frame that went out: forwarded += 1, and how long it waited in the node. */
    if (PyList_GET_SIZE(sent) > 0) {
        PyObject *hold = PyFloat_FromDouble(clock_seconds(CLOCK_REALTIME) - arrived);
        if (hold == NULL)
            goto fail;
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(sent); j++) {
            PyObject *consumer = PyList_GET_ITEM(sent, j);
            PyObject *times = PyObject_GetAttr(consumer, hot_attributes[H_HOLD_TIMES]);
            PyObject *appended = times == NULL ? NULL : PyObject_CallMethodOneArg(times, hot_attributes[H_APPEND], hold);
            Py_XDECREF(times);
            if (appended == NULL || add_long_named(consumer, hot_attributes[H_FORWARDED], 1) < 0) {
                Py_XDECREF(appended);
                Py_DECREF(hold);
                goto fail;
            }
            Py_DECREF(appended);
        }
        Py_DECREF(hold);
    }
    Py_DECREF(payloads);
    Py_DECREF(sent);
    if (PyList_GET_SIZE(cold) == 0 && PyList_GET_SIZE(handed) == 0) {
        Py_DECREF(cold);
        Py_DECREF(handed);
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(NN)", cold, handed);
fail:
    Py_DECREF(payloads);
    Py_XDECREF(cold);
    Py_XDECREF(handed);
    Py_XDECREF(sent);
    return NULL;
}

PyDoc_STRVAR(sockaddr_doc,
"sockaddr(host, port) -> bytes | None\n"
"\n"
"The struct sockaddr of a numeric IPv4 or IPv6 address and port, or None if host is not one.");

static PyObject *
make_sockaddr(PyObject *self, PyObject *args)
{
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si", &host, &port))
        return NULL;
    if (port < 0 || port > 65535)
        Py_RETURN_NONE;
    struct sockaddr_in v4;
    memset(&v4, 0, sizeof(v4));
    if (inet_pton(AF_INET, host, &v4.sin_addr) == 1) {
        v4.sin_family = AF_INET;
        v4.sin_port = htons((uint16_t)port);
        return PyBytes_FromStringAndSize((const char *)&v4, sizeof(v4));
    }
    struct sockaddr_in6 v6;
    memset(&v6, 0, sizeof(v6));
    if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1) {
        v6.sin6_family = AF_INET6;
        v6.sin6_port = htons((uint16_t)port);
        return PyBytes_FromStringAndSize((const char *)&v6, sizeof(v6));
    }
    Py_RETURN_NONE;
}

/* --- receive (part recv): one publisher RTP packet from its SRTP datagram to aiortc's RtpPacket ---------------
 *
 * recv_rtp() does what aiortc's DTLS transport does with an SRTP datagram before it routes the packet
 * (rtcdtlstransport.py _recv_next, _handle_rtp_data): libsrtp's srtp_unprotect on the session's own state
 * (reached through pylibsrtp's session and function pointer, as the send path reaches srtp_protect), then
 * RtpPacket.parse with the transport's header-extension map, field for field (aiortc/rtp.py), without the Python
 * wrapper, the struct calls and the per-extension tuples. media/receiving.py calls it once per received RTP
 * datagram; everything after it (routing, the receiver's statistics, NACK, RTX, REMB, the jitter buffer) stays
 * aiortc's and the node's own code.
 */

typedef int (*srtp_unprotect_fn)(void *ctx, void *srtp_hdr, int *len_ptr);

static unsigned char recv_buffer[SLOT_SIZE];

enum {
    R_VERSION, R_MARKER, R_PAYLOAD_TYPE, R_SEQUENCE_NUMBER, R_TIMESTAMP, R_SSRC, R_CSRC, R_EXTENSIONS, R_PAYLOAD,
    R_PADDING_SIZE,
    X_ABS_SEND_TIME, X_AUDIO_LEVEL, X_MID, X_REPAIRED_RID, X_RID, X_TOFFSET, X_TSN,
    R_COUNT
};
static const char *recv_names[R_COUNT] = {
    "version", "marker", "payload_type", "sequence_number", "timestamp", "ssrc", "csrc", "extensions", "payload",
    "padding_size",
    "abs_send_time", "audio_level", "mid", "repaired_rtp_stream_id", "rtp_stream_id", "transmission_offset",
    "transport_sequence_number",
};
static PyObject *recv_attributes[R_COUNT];
static PyObject *recv_empty;

#define RECV_TOO_LONG 0   /* longer than the session's buffer: the caller hands it to aiortc's own path */
#define RECV_SRTP_ERROR 1 /* srtp_unprotect refused it (replay, authentication): aiortc drops it */
#define RECV_BAD_PACKET 2 /* not a valid RTP packet (RtpPacket.parse raises ValueError): aiortc drops it */

/* A new instance of a Python class without running its __init__ (the caller sets every attribute __init__ sets). */
static PyObject *
bare_instance(PyObject *cls)
{
    PyTypeObject *type = (PyTypeObject *)cls;
    return type->tp_new(type, recv_empty, NULL);
}

static int
set_owned(PyObject *obj, int name, PyObject *value)
{
    return set_stolen(obj, recv_attributes[name], value);
}

/* The id of one extension in aiortc's HeaderExtensionsMap (its private HeaderExtensions of ids); -1 if none. */
static int
extension_id(PyObject *ids, int name)
{
    PyObject *value = PyObject_GetAttr(ids, recv_attributes[name]);
    if (value == NULL)
        return -2;
    long id = value == Py_None ? -1 : PyLong_AsLong(value);
    Py_DECREF(value);
    if (id == -1 && PyErr_Occurred())
        return -2;
    return (int)id;
}

/* HeaderExtensionsMap.get: returns a new HeaderExtensions, NULL with an exception set, or NULL with none set
 * (a ValueError in aiortc: the packet is dropped). */
static PyObject *
parse_extensions(const unsigned char *value, Py_ssize_t length, int profile, PyObject *ids, PyObject *ext_cls)
{
    int id_of[7];
    /* aiortc's order of tests: mid, repaired rid, rid, abs-send-time, toffset, audio level, transport seq */
    static const int order[7] = {X_MID, X_REPAIRED_RID, X_RID, X_ABS_SEND_TIME, X_TOFFSET, X_AUDIO_LEVEL, X_TSN};
    for (int i = 0; i < 7; i++) {
        if ((id_of[i] = extension_id(ids, order[i])) == -2)
            return NULL;
    }
    PyObject *found[R_COUNT] = {NULL};
    Py_ssize_t pos = 0;
    int bad = 0;
    while (pos < length && !bad) {
        if (value[pos] == 0) {
            pos++;
            continue;
        }
        int x_id;
        Py_ssize_t x_length;
        if (profile == 0xBEDE) {
            x_id = (value[pos] & 0xF0) >> 4;
            x_length = (value[pos] & 0x0F) + 1;
            pos += 1;
        } else if (profile == 0x1000) {
            if (length < pos + 2) {
                bad = 1;
                break;
            }
            x_id = value[pos];
            x_length = value[pos + 1];
            pos += 2;
        } else {
            break; /* another profile: no extensions */
        }
        if (length < pos + x_length) {
            bad = 1;
            break;
        }
        const unsigned char *x = value + pos;
        pos += x_length;
        int which = -1;
        for (int i = 0; i < 7; i++) {
            if (x_id == id_of[i]) {
                which = order[i];
                break;
            }
        }
        PyObject *item = NULL;
        switch (which) {
        case -1:
            continue;
        case X_MID:
            item = PyUnicode_DecodeUTF8((const char *)x, x_length, NULL);
            break;
        case X_REPAIRED_RID:
        case X_RID:
            item = PyUnicode_DecodeASCII((const char *)x, x_length, NULL);
            break;
        case X_ABS_SEND_TIME:
            if (x_length != 3) { /* aiortc's struct.unpack would raise */
                bad = 1;
                continue;
            }
            item = PyLong_FromUnsignedLong(((unsigned long)x[0] << 16) | ((unsigned long)x[1] << 8) | x[2]);
            break;
        case X_TOFFSET:
            if (x_length != 3) {
                bad = 1;
                continue;
            }
            {
                int32_t v = (int32_t)(((uint32_t)x[0] << 24) | ((uint32_t)x[1] << 16) | ((uint32_t)x[2] << 8));
                item = PyLong_FromLong((long)(v >> 8));
            }
            break;
        case X_AUDIO_LEVEL:
            if (x_length != 1) {
                bad = 1;
                continue;
            }
            item = Py_BuildValue("(Oi)", (x[0] & 0x80) ? Py_True : Py_False, x[0] & 0x7F);
            break;
        case X_TSN:
            if (x_length != 2) {
                bad = 1;
                continue;
            }
            item = PyLong_FromLong(((long)x[0] << 8) | x[1]);
            break;
        }
        if (item == NULL) {
            if (PyErr_ExceptionMatches(PyExc_ValueError)) { /* UnicodeDecodeError: aiortc drops the packet */
                PyErr_Clear();
                bad = 1;
                continue;
            }
            bad = 2;
            break;
        }
        Py_XSETREF(found[which], item);
    }
    PyObject *extensions = NULL;
    if (!bad) {
        extensions = bare_instance(ext_cls);
        /* The dataclass's field order, as its __init__ sets them. */
        for (int name = X_ABS_SEND_TIME; extensions != NULL && name <= X_TSN; name++) {
            PyObject *v = found[name] != NULL ? found[name] : Py_None;
            if (PyObject_SetAttr(extensions, recv_attributes[name], v) < 0)
                Py_CLEAR(extensions);
        }
    }
    for (int i = 0; i < R_COUNT; i++)
        Py_XDECREF(found[i]);
    return extensions;
}

PyDoc_STRVAR(recv_rtp_doc,
"recv_rtp(data, session, unprotect, limit, ids, packet_class, extensions_class) -> RtpPacket | int\n"
"\n"
"Unprotect one SRTP datagram with libsrtp's srtp_unprotect at address unprotect on the srtp_t session, and parse\n"
"it as aiortc's RtpPacket.parse does with the header-extension ids ids; returns the packet, or 0 (longer than\n"
"limit: not touched), 1 (SRTP refused it) or 2 (not a valid RTP packet).");

static PyObject *
recv_rtp(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "recv_rtp takes 7 arguments");
        return NULL;
    }
    PyObject *data = args[0];
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "data must be bytes");
        return NULL;
    }
    void *session = PyLong_AsVoidPtr(args[1]);
    void *function = PyLong_AsVoidPtr(args[2]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *ids = args[4], *packet_cls = args[5], *ext_cls = args[6];
    if (!PyType_Check(packet_cls) || !PyType_Check(ext_cls)) {
        PyErr_SetString(PyExc_TypeError, "packet_class and extensions_class must be classes");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (size > limit || size > SLOT_SIZE)
        return PyLong_FromLong(RECV_TOO_LONG);
    memcpy(recv_buffer, PyBytes_AS_STRING(data), (size_t)size);
    int length = (int)size;
    if (((srtp_unprotect_fn)function)(session, recv_buffer, &length) != 0)
        return PyLong_FromLong(RECV_SRTP_ERROR);

    /* RtpPacket.parse */
    const unsigned char *d = recv_buffer;
    if (length < 12)
        return PyLong_FromLong(RECV_BAD_PACKET);
    int version = d[0] >> 6, padding = (d[0] >> 5) & 1, extension = (d[0] >> 4) & 1, cc = d[0] & 0x0F;
    if (version != 2 || length < 12 + 4 * cc)
        return PyLong_FromLong(RECV_BAD_PACKET);
    Py_ssize_t pos = 12 + 4 * cc;
    PyObject *extensions = NULL;
    if (extension) {
        if (length < pos + 4)
            return PyLong_FromLong(RECV_BAD_PACKET);
        int profile = (d[pos] << 8) | d[pos + 1];
        Py_ssize_t ext_length = (Py_ssize_t)((d[pos + 2] << 8) | d[pos + 3]) * 4;
        pos += 4;
        if (length < pos + ext_length)
            return PyLong_FromLong(RECV_BAD_PACKET);
        extensions = parse_extensions(d + pos, ext_length, profile, ids, ext_cls);
        if (extensions == NULL)
            return PyErr_Occurred() ? NULL : PyLong_FromLong(RECV_BAD_PACKET);
        pos += ext_length;
    } else {
        extensions = bare_instance(ext_cls);
        for (int name = X_ABS_SEND_TIME; extensions != NULL && name <= X_TSN; name++) {
            if (PyObject_SetAttr(extensions, recv_attributes[name], Py_None) < 0)
                Py_CLEAR(extensions);
        }
        if (extensions == NULL)
            return NULL;
    }
    Py_ssize_t end = length, padding_size = 0;
    if (padding) {
        int padding_len = d[length - 1];
        if (!padding_len || padding_len > length - pos) {
            Py_DECREF(extensions);
            return PyLong_FromLong(RECV_BAD_PACKET);
        }
        padding_size = padding_len;
        end = length - padding_len;
    }
    PyObject *packet = bare_instance(packet_cls);
    if (packet == NULL) {
        Py_DECREF(extensions);
        return NULL;
    }
    PyObject *csrc = PyList_New(cc);
    if (csrc != NULL) {
        for (int i = 0; i < cc; i++) {
            const unsigned char *c = d + 12 + 4 * i;
            PyObject *v = PyLong_FromUnsignedLong(((unsigned long)c[0] << 24) | ((unsigned long)c[1] << 16)
                                                  | ((unsigned long)c[2] << 8) | c[3]);
            if (v == NULL) {
                Py_CLEAR(csrc);
                break;
            }
            PyList_SET_ITEM(csrc, i, v);
        }
    }
    /* RtpPacket.__init__'s order of attributes */
    int failed = csrc == NULL || set_owned(packet, R_VERSION, PyLong_FromLong(2)) < 0
        || set_owned(packet, R_MARKER, PyLong_FromLong(d[1] >> 7)) < 0
        || set_owned(packet, R_PAYLOAD_TYPE, PyLong_FromLong(d[1] & 0x7F)) < 0
        || set_owned(packet, R_SEQUENCE_NUMBER, PyLong_FromLong((d[2] << 8) | d[3])) < 0
        || set_owned(packet, R_TIMESTAMP,
                     PyLong_FromUnsignedLong(((unsigned long)d[4] << 24) | ((unsigned long)d[5] << 16)
                                             | ((unsigned long)d[6] << 8) | d[7])) < 0
        || set_owned(packet, R_SSRC,
                     PyLong_FromUnsignedLong(((unsigned long)d[8] << 24) | ((unsigned long)d[9] << 16)
                                             | ((unsigned long)d[10] << 8) | d[11])) < 0
        || set_owned(packet, R_CSRC, Py_NewRef(csrc)) < 0 || set_owned(packet, R_EXTENSIONS, Py_NewRef(extensions)) < 0
        || set_owned(packet, R_PAYLOAD, PyBytes_FromStringAndSize((const char *)d + pos, end - pos)) < 0
        || set_owned(packet, R_PADDING_SIZE, PyLong_FromSsize_t(padding_size)) < 0;
    Py_XDECREF(csrc);
    Py_DECREF(extensions);
    if (failed) {
        Py_DECREF(packet);
        return NULL;
    }
    return packet;
}


PyDoc_STRVAR(vp8_depayload_doc,
"vp8_depayload(payload) -> bytes | None\n"
"\n"
"What aiortc's vp8_depayload returns: the VP8 payload after its payload descriptor; None where it raises ValueError\n"
"(a truncated descriptor).");

static PyObject *
vp8_depayload(PyObject *self, PyObject *payload)
{
    if (!PyBytes_Check(payload)) {
        PyErr_SetString(PyExc_TypeError, "payload must be bytes");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(payload);
    Py_ssize_t n = PyBytes_GET_SIZE(payload), pos = 1;
    if (n < 1)
        Py_RETURN_NONE;
    if (d[0] & 0x80) {
        if (n < pos + 1)
            Py_RETURN_NONE;
        int x = d[pos++];
        if (x & 0x80) { /* picture id */
            if (n < pos + 1)
                Py_RETURN_NONE;
            if (d[pos] & 0x80) {
                if (n < pos + 2)
                    Py_RETURN_NONE;
                pos += 2;
            } else {
                pos += 1;
            }
        }
        if (x & 0x40) { /* TL0PICIDX */
            if (n < pos + 1)
                Py_RETURN_NONE;
            pos += 1;
        }
        if (x & 0x30) { /* T or K */
            if (n < pos + 1)
                Py_RETURN_NONE;
            pos += 1;
        }
    }
    return PyBytes_FromStringAndSize((const char *)d + pos, n - pos);
}


PyDoc_STRVAR(recv_rtcp_doc,
"recv_rtcp(data, session, unprotect_rtcp, limit) -> bytes | int\n"
"\n"
"Unprotect one SRTCP datagram with libsrtp's srtp_unprotect_rtcp at address unprotect_rtcp on the srtp_t session:\n"
"the plain RTCP compound packet, or 0 (longer than limit: not touched) or 1 (SRTCP refused it).");

static PyObject *
recv_rtcp(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "recv_rtcp(data: bytes, session, unprotect_rtcp, limit)");
        return NULL;
    }
    void *session = PyLong_AsVoidPtr(args[1]);
    void *function = PyLong_AsVoidPtr(args[2]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (size > limit || size > SLOT_SIZE)
        return PyLong_FromLong(RECV_TOO_LONG);
    memcpy(recv_buffer, PyBytes_AS_STRING(args[0]), (size_t)size);
    int length = (int)size;
    if (((srtp_unprotect_fn)function)(session, recv_buffer, &length) != 0)
        return PyLong_FromLong(RECV_SRTP_ERROR);
    return PyBytes_FromStringAndSize((const char *)recv_buffer, length);
}

static PyMethodDef methods[] = {
    {"send_frame", (PyCFunction)(void (*)(void))send_frame, METH_FASTCALL, send_frame_doc},
    {"send_frames", send_frames, METH_O, send_frames_doc},
    {"send_lanes", (PyCFunction)(void (*)(void))send_lanes, METH_FASTCALL, send_lanes_doc},
    {"fan_hot", (PyCFunction)(void (*)(void))fan_hot, METH_FASTCALL, fan_hot_doc},
    {"configure_hot", configure_hot, METH_VARARGS, configure_hot_doc},
    {"sockaddr", make_sockaddr, METH_VARARGS, sockaddr_doc},
    {"recv_rtp", (PyCFunction)(void (*)(void))recv_rtp, METH_FASTCALL, recv_rtp_doc},
    {"vp8_depayload", vp8_depayload, METH_O, vp8_depayload_doc},
    {"recv_rtcp", (PyCFunction)(void (*)(void))recv_rtcp, METH_FASTCALL, recv_rtcp_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "media._fastpath",
    "The media node's per-packet send loop in C (media/sending.py falls back to Python without it).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    for (int i = 0; i < A_COUNT; i++) {
        if (attributes[i] == NULL && (attributes[i] = PyUnicode_InternFromString(attribute_names[i])) == NULL)
            return NULL;
    }
    for (int i = 0; i < R_COUNT; i++) {
        if (recv_attributes[i] == NULL && (recv_attributes[i] = PyUnicode_InternFromString(recv_names[i])) == NULL)
            return NULL;
    }
    if (recv_empty == NULL && (recv_empty = PyTuple_New(0)) == NULL)
        return NULL;
    for (int i = 0; i < H_COUNT; i++) {
        if (hot_attributes[i] == NULL && (hot_attributes[i] = PyUnicode_InternFromString(hot_names[i])) == NULL)
            return NULL;
    }
    if (one_object == NULL && (one_object = PyLong_FromLong(1)) == NULL)
        return NULL;
    if (hot_vp8_key == NULL && (hot_vp8_key = PyUnicode_InternFromString("vp8")) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
