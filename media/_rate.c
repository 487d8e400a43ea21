/* aiortc 1.16's receive-side bandwidth estimator (aiortc/rate.py, RemoteBitrateEstimator) in C, step for step.
 *
 * A publisher's video receiver feeds its estimator every packet that carries abs-send-time, and sends the REMB
 * it returns. In Python that was about a fifth of the media node's cost of a publisher: a Python loop per
 * elapsed millisecond in the rate counter, and a minimum over 60 values per frame. This is the same algorithm
 * with the same arithmetic in the same order, so the same packets give the same REMBs, bit for bit
 * (tests/unit/test_rate.py feeds both the same packets). Python's round() is half-to-even: nearbyint in the
 * default rounding mode; int() truncates: a C cast; x ** 2 on a float is pow(x, 2.0), as in CPython.
 * The module is built with -ffp-contract=off so that no multiply-add is fused where Python rounds twice.
 *
 * Two differences, neither reachable from aiortc's receiver: abs_send_time must be a 24-bit value (the
 * extension's size; ValueError otherwise), and a rate counter idle for longer than its window is cleared in one
 * step instead of one millisecond at a time (the same result).
 * media/aiortc_compat.py (native_estimator) uses this only where aiortc's rate.py is the one it was written
 * against (by the SHA-256 of its source).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#define WINDOW 1000 /* RateCounter(1000, 8000) */
#define SCALE 8000
#define BURST_DELTA_THRESHOLD_MS 5
#define MAX_ADAPT_OFFSET_MS 15
#define MIN_NUM_DELTAS 60
#define DELTA_COUNTER_MAX 1000
#define MIN_FRAME_PERIOD_HISTORY_LENGTH 60
#define INTER_ARRIVAL_SHIFT 26
#define TIMESTAMP_GROUP_LENGTH_MS 5

enum { NORMAL = 0, UNDERUSING = 1, OVERUSING = 2 }; /* BandwidthUsage */
enum { HOLD = 0, INCREASE = 1, DECREASE = 2 };      /* RateControlState */

typedef struct {
    long long count;
    long long value;
} bucket;

typedef struct {
    int present;
    long long arrival_time; /* set by the call that starts the group (aiortc: None until then, never read so) */
    long long first_timestamp;
    long long last_timestamp;
    long long size;
} timestamp_group;

typedef struct {
    PyObject_HEAD
    /* RateCounter */
    bucket buckets[WINDOW];
    bucket total;
    long long origin_index;
    long long origin_ms;
    int has_origin;
    int incoming_bitrate_initialized;
    /* InterArrival */
    long long group_length;
    double timestamp_to_ms;
    timestamp_group current;
    timestamp_group previous;
    /* OveruseEstimator */
    double E[2][2];
    long long num_of_deltas;
    double offset;
    double estimator_previous_offset;
    double slope;
    double history[MIN_FRAME_PERIOD_HISTORY_LENGTH];
    int history_start;
    int history_length;
    double avg_noise;
    double var_noise;
    double process_noise[2];
    /* OveruseDetector */
    int hypothesis;
    long long detector_last_update_ms;
    int has_detector_last_update;
    double k_up;
    double k_down;
    long long overuse_counter;
    double overuse_time;
    int has_overuse_time;
    double overuse_time_threshold;
    double detector_previous_offset;
    double threshold;
    /* AimdRateControl */
    double avg_max_bitrate_kbps;
    int has_avg_max;
    double var_max_bitrate_kbps;
    long long current_bitrate;
    int current_bitrate_initialized;
    long long first_estimated_throughput_time;
    int has_first_estimated_throughput_time;
    long long last_change_ms;
    int has_last_change;
    int near_max;
    long long latest_estimated_throughput;
    long long rtt;
    int state;
    /* RemoteBitrateEstimator */
    long long last_update_ms;
    int has_last_update;
    PyObject *ssrcs; /* dict: ssrc -> last arrival (ms), in order of first arrival, as aiortc's */
} Estimator;

static long long
python_mod(long long a, long long b)
{
    long long r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

static long long
round_half_even(double value)
{
    return (long long)nearbyint(value);
}

static long long
uint32_add(long long a, long long b)
{
    return (a + b) & 0xFFFFFFFFLL;
}

static int
uint32_gt(long long a, long long b)
{
    const long long half_mod = 0x80000000LL;
    return ((a < b) && ((b - a) > half_mod)) || ((a > b) && ((a - b) < half_mod));
}

/* RateCounter */

static void
counter_reset(Estimator *self)
{
    memset(self->buckets, 0, sizeof(self->buckets));
    self->origin_index = 0;
    self->has_origin = 0;
    self->origin_ms = 0;
    self->total.count = 0;
    self->total.value = 0;
}

static void
counter_erase_old(Estimator *self, long long now_ms)
{
    long long new_origin_ms = now_ms - WINDOW + 1;
    if (self->origin_ms >= new_origin_ms)
        return;
    if (new_origin_ms - self->origin_ms >= WINDOW) { /* every bucket is erased: at once */
        long long steps = new_origin_ms - self->origin_ms;
        memset(self->buckets, 0, sizeof(self->buckets));
        self->total.count = 0;
        self->total.value = 0;
        self->origin_index = python_mod(self->origin_index + steps, WINDOW);
        self->origin_ms = new_origin_ms;
        return;
    }
    while (self->origin_ms < new_origin_ms) {
        bucket *b = &self->buckets[self->origin_index];
        self->total.count -= b->count;
        self->total.value -= b->value;
        b->count = 0;
        b->value = 0;
        self->origin_index = (self->origin_index + 1) % WINDOW;
        self->origin_ms += 1;
    }
}

static void
counter_add(Estimator *self, long long value, long long now_ms)
{
    if (!self->has_origin) {
        self->origin_ms = now_ms;
        self->has_origin = 1;
    } else {
        counter_erase_old(self, now_ms);
    }
    long long index = python_mod(self->origin_index + now_ms - self->origin_ms, WINDOW);
    self->buckets[index].count += 1;
    self->buckets[index].value += value;
    self->total.count += 1;
    self->total.value += value;
}

/* 1 and *rate, or 0 for None */
static int
counter_rate(Estimator *self, long long now_ms, long long *rate)
{
    if (self->has_origin) {
        counter_erase_old(self, now_ms);
        long long active_window_size = now_ms - self->origin_ms + 1;
        if (self->total.count > 0 && active_window_size > 1) {
            *rate = round_half_even((double)(SCALE * self->total.value) / (double)active_window_size);
            return 1;
        }
    }
    return 0;
}

/* InterArrival */

static void
group_start(timestamp_group *group, long long timestamp)
{
    group->present = 1;
    group->arrival_time = 0;
    group->first_timestamp = timestamp;
    group->last_timestamp = timestamp;
    group->size = 0;
}

static int
belongs_to_burst(Estimator *self, long long timestamp, long long arrival_time)
{
    long long timestamp_delta = uint32_add(timestamp, -self->current.last_timestamp);
    long long timestamp_delta_ms = round_half_even(self->timestamp_to_ms * (double)timestamp_delta);
    long long arrival_time_delta = arrival_time - self->current.arrival_time;
    return timestamp_delta_ms == 0
           || ((arrival_time_delta - timestamp_delta_ms) < 0 && arrival_time_delta <= BURST_DELTA_THRESHOLD_MS);
}

/* 1 with the deltas, 0 for None */
static int
compute_deltas(Estimator *self, long long timestamp, long long arrival_time, long long packet_size,
               long long *delta_timestamp, long long *delta_arrival, long long *delta_size)
{
    int found = 0;
    if (!self->current.present) {
        group_start(&self->current, timestamp);
    } else if (uint32_add(timestamp, -self->current.first_timestamp) >= 0x80000000LL) {
        return 0; /* packet_out_of_order */
    } else if (!belongs_to_burst(self, timestamp, arrival_time)
               && uint32_add(timestamp, -self->current.first_timestamp) > self->group_length) {
        if (self->previous.present) {
            *delta_timestamp = uint32_add(self->current.last_timestamp, -self->previous.last_timestamp);
            *delta_arrival = self->current.arrival_time - self->previous.arrival_time;
            *delta_size = self->current.size - self->previous.size;
            found = 1;
        }
        self->previous = self->current;
        group_start(&self->current, timestamp);
    } else if (uint32_gt(timestamp, self->current.last_timestamp)) {
        self->current.last_timestamp = timestamp;
    }
    self->current.size += packet_size;
    self->current.arrival_time = arrival_time;
    return found;
}

/* OveruseEstimator */

static double
update_min_frame_period(Estimator *self, double ts_delta)
{
    double min_frame_period = ts_delta;
    if (self->history_length >= MIN_FRAME_PERIOD_HISTORY_LENGTH) {
        self->history_start = (self->history_start + 1) % MIN_FRAME_PERIOD_HISTORY_LENGTH;
        self->history_length -= 1;
    }
    for (int i = 0; i < self->history_length; i++) {
        double old = self->history[(self->history_start + i) % MIN_FRAME_PERIOD_HISTORY_LENGTH];
        if (!(min_frame_period < old)) /* min(old, min_frame_period) */
            min_frame_period = old;
    }
    self->history[(self->history_start + self->history_length) % MIN_FRAME_PERIOD_HISTORY_LENGTH] = ts_delta;
    self->history_length += 1;
    return min_frame_period;
}

static void
update_noise_estimate(Estimator *self, double residual, double ts_delta)
{
    double alpha = 0.01;
    if (self->num_of_deltas > 10 * 30)
        alpha = 0.002;
    double beta = pow(1 - alpha, ts_delta * 30.0 / 1000.0);
    self->avg_noise = beta * self->avg_noise + (1 - beta) * residual;
    self->var_noise = beta * self->var_noise + (1 - beta) * pow(self->avg_noise - residual, 2.0);
    if (self->var_noise < 1)
        self->var_noise = 1;
}

static void
estimator_update(Estimator *self, long long time_delta_ms, double timestamp_delta_ms, long long size_delta,
                 int current_hypothesis)
{
    double min_frame_period = update_min_frame_period(self, timestamp_delta_ms);
    double t_ts_delta = (double)time_delta_ms - timestamp_delta_ms;
    double fs_delta = (double)size_delta;

    self->num_of_deltas = self->num_of_deltas + 1 < DELTA_COUNTER_MAX ? self->num_of_deltas + 1 : DELTA_COUNTER_MAX;

    self->E[0][0] += self->process_noise[0];
    self->E[1][1] += self->process_noise[1];
    if ((current_hypothesis == OVERUSING && self->offset < self->estimator_previous_offset)
        || (current_hypothesis == UNDERUSING && self->offset > self->estimator_previous_offset))
        self->E[1][1] += 10 * self->process_noise[1];

    double h0 = fs_delta;
    double h1 = 1.0;
    double Eh0 = self->E[0][0] * h0 + self->E[0][1] * h1;
    double Eh1 = self->E[1][0] * h0 + self->E[1][1] * h1;

    double residual = t_ts_delta - self->slope * h0 - self->offset;
    if (current_hypothesis == NORMAL) {
        double max_residual = 3.0 * sqrt(self->var_noise);
        if (fabs(residual) < max_residual)
            update_noise_estimate(self, residual, min_frame_period);
        else
            update_noise_estimate(self, residual < 0 ? -max_residual : max_residual, min_frame_period);
    }

    double denom = self->var_noise + h0 * Eh0 + h1 * Eh1;
    double K0 = Eh0 / denom;
    double K1 = Eh1 / denom;

    double IKh00 = 1.0 - K0 * h0;
    double IKh01 = -K0 * h1;
    double IKh10 = -K1 * h0;
    double IKh11 = 1.0 - K1 * h1;
    double e00 = self->E[0][0];
    double e01 = self->E[0][1];

    self->E[0][0] = e00 * IKh00 + self->E[1][0] * IKh01;
    self->E[0][1] = e01 * IKh00 + self->E[1][1] * IKh01;
    self->E[1][0] = e00 * IKh10 + self->E[1][0] * IKh11;
    self->E[1][1] = e01 * IKh10 + self->E[1][1] * IKh11;

    self->estimator_previous_offset = self->offset;
    self->slope += K0 * residual;
    self->offset += K1 * residual;
}

/* OveruseDetector */

static void
update_threshold(Estimator *self, double modified_offset, long long now_ms)
{
    if (!self->has_detector_last_update) {
        self->detector_last_update_ms = now_ms;
        self->has_detector_last_update = 1;
    }
    if (fabs(modified_offset) > self->threshold + MAX_ADAPT_OFFSET_MS) {
        self->detector_last_update_ms = now_ms;
        return;
    }
    double k = fabs(modified_offset) < self->threshold ? self->k_down : self->k_up;
    long long time_delta_ms = now_ms - self->detector_last_update_ms;
    if (time_delta_ms > 100)
        time_delta_ms = 100;
    self->threshold += k * (fabs(modified_offset) - self->threshold) * (double)time_delta_ms;
    double limited = 600 < self->threshold ? 600 : self->threshold; /* max(6, min(threshold, 600)) */
    self->threshold = limited > 6 ? limited : 6;
    self->detector_last_update_ms = now_ms;
}

static void
detect(Estimator *self, double offset, double timestamp_delta_ms, long long num_of_deltas, long long now_ms)
{
    if (num_of_deltas < 2)
        return;
    double T = (double)(num_of_deltas < MIN_NUM_DELTAS ? num_of_deltas : MIN_NUM_DELTAS) * offset;
    if (T > self->threshold) {
        if (!self->has_overuse_time) {
            self->overuse_time = timestamp_delta_ms / 2;
            self->has_overuse_time = 1;
        } else {
            self->overuse_time += timestamp_delta_ms;
        }
        self->overuse_counter += 1;
        if (self->overuse_time > self->overuse_time_threshold && self->overuse_counter > 1
            && offset >= self->detector_previous_offset) {
            self->overuse_counter = 0;
            self->overuse_time = 0;
            self->hypothesis = OVERUSING;
        }
    } else if (T < -self->threshold) {
        self->overuse_counter = 0;
        self->has_overuse_time = 0;
        self->hypothesis = UNDERUSING;
    } else {
        self->overuse_counter = 0;
        self->has_overuse_time = 0;
        self->hypothesis = NORMAL;
    }
    self->detector_previous_offset = offset;
    update_threshold(self, T, now_ms);
}

/* AimdRateControl */

static int
near_max_rate_increase(Estimator *self, long long *result)
{
    double bits_per_frame = (double)self->current_bitrate / 30;
    long long packets_per_frame = (long long)ceil(bits_per_frame / (8 * 1200));
    if (packets_per_frame == 0) {
        PyErr_SetString(PyExc_ZeroDivisionError, "float division by zero");
        return -1;
    }
    double avg_packet_size_bits = bits_per_frame / (double)packets_per_frame;
    long long response_time = self->rtt + 100;
    long long increase = (long long)((avg_packet_size_bits * 1000) / (double)response_time);
    *result = increase > 4000 ? increase : 4000;
    return 0;
}

static int
rate_control_update(Estimator *self, int bandwidth_usage, int has_throughput, long long estimated_throughput,
                    long long now_ms, long long *target)
{
    if (!self->current_bitrate_initialized && has_throughput) {
        if (!self->has_first_estimated_throughput_time) {
            self->first_estimated_throughput_time = now_ms;
            self->has_first_estimated_throughput_time = 1;
        } else if (now_ms - self->first_estimated_throughput_time > 3000) {
            self->current_bitrate = estimated_throughput;
            self->current_bitrate_initialized = 1;
        }
    }
    if (!self->current_bitrate_initialized && bandwidth_usage != OVERUSING)
        return 0;

    if (bandwidth_usage == NORMAL && self->state == HOLD) {
        self->last_change_ms = now_ms;
        self->has_last_change = 1;
        self->state = INCREASE;
    } else if (bandwidth_usage == OVERUSING) {
        self->state = DECREASE;
    } else if (bandwidth_usage == UNDERUSING) {
        self->state = HOLD;
    }

    long long new_bitrate = self->current_bitrate;
    if (has_throughput)
        self->latest_estimated_throughput = estimated_throughput;
    else
        estimated_throughput = self->latest_estimated_throughput;
    double estimated_throughput_kbps = (double)estimated_throughput / 1000;

    if (self->state == INCREASE) {
        if (self->has_avg_max) {
            double sigma_kbps = sqrt(self->var_max_bitrate_kbps * self->avg_max_bitrate_kbps);
            if (estimated_throughput_kbps >= self->avg_max_bitrate_kbps + 3 * sigma_kbps) {
                self->near_max = 0;
                self->has_avg_max = 0;
            }
        }
        if (self->near_max) {
            long long increase;
            if (near_max_rate_increase(self, &increase) < 0)
                return -1;
            /* _additive_rate_increase(last_change_ms, now_ms) */
            new_bitrate += (long long)((double)((now_ms - self->last_change_ms) * increase) / 1000);
        } else {
            /* _multiplicative_rate_increase(new_bitrate, last_change_ms, now_ms) */
            double alpha = 1.08;
            if (self->has_last_change) {
                long long elapsed_ms = now_ms - self->last_change_ms;
                if (elapsed_ms > 1000)
                    elapsed_ms = 1000;
                alpha = pow(alpha, (double)elapsed_ms / 1000);
            }
            double increase = (alpha - 1) * (double)new_bitrate;
            new_bitrate += 1000 > increase ? 1000 : (long long)increase;
        }
        self->last_change_ms = now_ms;
        self->has_last_change = 1;
    } else if (self->state == DECREASE) {
        if (self->has_avg_max) {
            double sigma_kbps = sqrt(self->var_max_bitrate_kbps * self->avg_max_bitrate_kbps);
            if (estimated_throughput_kbps < self->avg_max_bitrate_kbps - 3 * sigma_kbps)
                self->has_avg_max = 0;
        }
        /* _update_max_throughput_estimate(estimated_throughput_kbps) */
        double alpha = 0.05;
        if (!self->has_avg_max) {
            self->avg_max_bitrate_kbps = estimated_throughput_kbps;
            self->has_avg_max = 1;
        } else {
            self->avg_max_bitrate_kbps = (1 - alpha) * self->avg_max_bitrate_kbps + alpha * estimated_throughput_kbps;
        }
        double norm = self->avg_max_bitrate_kbps > 1 ? self->avg_max_bitrate_kbps : 1;
        self->var_max_bitrate_kbps = (1 - alpha) * self->var_max_bitrate_kbps
                                     + alpha * pow(self->avg_max_bitrate_kbps - estimated_throughput_kbps, 2.0) / norm;
        double limited = 2.5 < self->var_max_bitrate_kbps ? 2.5 : self->var_max_bitrate_kbps;
        self->var_max_bitrate_kbps = limited > 0.4 ? limited : 0.4;

        self->near_max = 1;
        new_bitrate = round_half_even(0.85 * (double)estimated_throughput);
        self->last_change_ms = now_ms;
        self->has_last_change = 1;
        self->state = HOLD;
    }

    /* _clamp_bitrate(new_bitrate, estimated_throughput) */
    long long max_bitrate = (long long)(1.5 * (double)estimated_throughput) + 10000;
    if (self->current_bitrate > max_bitrate)
        max_bitrate = self->current_bitrate;
    self->current_bitrate = new_bitrate < max_bitrate ? new_bitrate : max_bitrate;
    *target = self->current_bitrate;
    return 1;
}

/* The type */

static int
Estimator_init(Estimator *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, ":RemoteBitrateEstimator", keywords))
        return -1;
    PyObject *ssrcs = PyDict_New();
    if (ssrcs == NULL)
        return -1;
    Py_XSETREF(self->ssrcs, ssrcs);

    counter_reset(self);
    self->incoming_bitrate_initialized = 1;

    self->group_length = ((long long)TIMESTAMP_GROUP_LENGTH_MS << INTER_ARRIVAL_SHIFT) / 1000;
    self->timestamp_to_ms = 1000.0 / (double)(1LL << INTER_ARRIVAL_SHIFT);
    memset(&self->current, 0, sizeof(self->current));
    memset(&self->previous, 0, sizeof(self->previous));

    self->E[0][0] = 100.0;
    self->E[0][1] = 0.0;
    self->E[1][0] = 0.0;
    self->E[1][1] = 0.1;
    self->num_of_deltas = 0;
    self->offset = 0.0;
    self->estimator_previous_offset = 0.0;
    self->slope = 1.0 / 64;
    self->history_start = 0;
    self->history_length = 0;
    self->avg_noise = 0.0;
    self->var_noise = 50.0;
    self->process_noise[0] = 1e-13;
    self->process_noise[1] = 1e-3;

    self->hypothesis = NORMAL;
    self->has_detector_last_update = 0;
    self->detector_last_update_ms = 0;
    self->k_up = 0.0087;
    self->k_down = 0.039;
    self->overuse_counter = 0;
    self->has_overuse_time = 0;
    self->overuse_time = 0;
    self->overuse_time_threshold = 10;
    self->detector_previous_offset = 0.0;
    self->threshold = 12.5;

    self->has_avg_max = 0;
    self->avg_max_bitrate_kbps = 0;
    self->var_max_bitrate_kbps = 0.4;
    self->current_bitrate = 30000000;
    self->current_bitrate_initialized = 0;
    self->has_first_estimated_throughput_time = 0;
    self->first_estimated_throughput_time = 0;
    self->has_last_change = 0;
    self->last_change_ms = 0;
    self->near_max = 0;
    self->latest_estimated_throughput = 30000000;
    self->rtt = 200;
    self->state = HOLD;

    self->has_last_update = 0;
    self->last_update_ms = 0;
    return 0;
}

static void
Estimator_dealloc(Estimator *self)
{
    Py_XDECREF(self->ssrcs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(add_doc,
             "add(arrival_time_ms, abs_send_time, payload_size, ssrc)\n--\n\n"
             "aiortc's ``RemoteBitrateEstimator.add``: ``(bitrate, ssrcs)`` for a REMB to send, or None.");

static PyObject *
Estimator_add(Estimator *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *names[] = {"arrival_time_ms", "abs_send_time", "payload_size", "ssrc"};
    PyObject *values[4] = {NULL, NULL, NULL, NULL};
    if (nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "add() takes 4 arguments");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        values[i] = args[i];
    if (kwnames != NULL) {
        Py_ssize_t count = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < count; k++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, k);
            int slot = -1;
            for (int j = 0; j < 4; j++) {
                if (PyUnicode_CompareWithASCIIString(name, names[j]) == 0) {
                    slot = j;
                    break;
                }
            }
            if (slot < 0 || values[slot] != NULL) {
                PyErr_Format(PyExc_TypeError, "add() got an unexpected or repeated argument %R", name);
                return NULL;
            }
            values[slot] = args[nargs + k];
        }
    }
    for (int j = 0; j < 4; j++) {
        if (values[j] == NULL) {
            PyErr_Format(PyExc_TypeError, "add() missing argument '%s'", names[j]);
            return NULL;
        }
    }
    long long arrival_time_ms = PyLong_AsLongLong(values[0]);
    long long abs_send_time = PyLong_AsLongLong(values[1]);
    long long payload_size = PyLong_AsLongLong(values[2]);
    if (PyErr_Occurred())
        return NULL;
    if (abs_send_time < 0 || abs_send_time >= (1LL << 24)) {
        PyErr_SetString(PyExc_ValueError, "abs_send_time is not a 24-bit value");
        return NULL;
    }
    PyObject *ssrc = values[3];
    if (self->ssrcs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RemoteBitrateEstimator.__init__ was not called");
        return NULL;
    }
    long long timestamp = abs_send_time << 8;
    int update_estimate = 0;

    if (PyDict_SetItem(self->ssrcs, ssrc, values[0]) < 0)
        return NULL;

    long long rate;
    if (counter_rate(self, arrival_time_ms, &rate)) {
        self->incoming_bitrate_initialized = 1;
    } else if (self->incoming_bitrate_initialized) {
        counter_reset(self);
        self->incoming_bitrate_initialized = 0;
    }
    counter_add(self, payload_size, arrival_time_ms);

    long long delta_timestamp, delta_arrival, delta_size;
    if (compute_deltas(self, timestamp, arrival_time_ms, payload_size, &delta_timestamp, &delta_arrival,
                       &delta_size)) {
        double timestamp_delta_ms = (double)delta_timestamp * self->timestamp_to_ms;
        estimator_update(self, delta_arrival, timestamp_delta_ms, delta_size, self->hypothesis);
        detect(self, self->offset, timestamp_delta_ms, self->num_of_deltas, arrival_time_ms);
    }

    if (!self->has_last_update || (arrival_time_ms - self->last_update_ms) > 500) /* feedback_interval() */
        update_estimate = 1;
    else if (self->hypothesis == OVERUSING)
        update_estimate = 1;

    if (update_estimate) {
        long long throughput = 0;
        int has_throughput = counter_rate(self, arrival_time_ms, &throughput);
        long long target;
        int updated = rate_control_update(self, self->hypothesis, has_throughput, throughput, arrival_time_ms, &target);
        if (updated < 0)
            return NULL;
        if (updated) {
            self->last_update_ms = arrival_time_ms;
            self->has_last_update = 1;
            PyObject *keys = PyDict_Keys(self->ssrcs);
            if (keys == NULL)
                return NULL;
            return Py_BuildValue("(LN)", target, keys);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
optional_long(int present, long long value)
{
    if (!present)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(value);
}

static PyObject *
optional_double(int present, double value)
{
    if (!present)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(value);
}

PyDoc_STRVAR(snapshot_doc,
             "snapshot()\n--\n\n"
             "The estimator's state as a dict, named as aiortc's attributes (``rate_control.current_bitrate`` ...): "
             "for tests that compare it with aiortc's, and for diagnostics.");

static PyObject *
Estimator_snapshot(Estimator *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue(
        "{s:L,s:L,s:N,s:i,"
        "s:N,s:N,"
        "s:d,s:d,s:d,s:d,s:L,s:d,s:d,s:d,s:d,s:d,"
        "s:i,s:L,s:N,s:d,s:N,"
        "s:N,s:d,s:L,s:i,s:N,s:N,s:i,s:L,s:i,"
        "s:N}",
        "incoming_bitrate.total_count", self->total.count, "incoming_bitrate.total_value", self->total.value,
        "incoming_bitrate.origin_ms", optional_long(self->has_origin, self->origin_ms),
        "incoming_bitrate_initialized", self->incoming_bitrate_initialized,
        "inter_arrival.current_group.last_timestamp",
        optional_long(self->current.present, self->current.last_timestamp),
        "inter_arrival.previous_group.last_timestamp",
        optional_long(self->previous.present, self->previous.last_timestamp),
        "estimator.E00", self->E[0][0], "estimator.E01", self->E[0][1], "estimator.E10", self->E[1][0],
        "estimator.E11", self->E[1][1], "estimator.num_of_deltas", self->num_of_deltas, "estimator.offset",
        self->offset, "estimator.previous_offset", self->estimator_previous_offset, "estimator.slope", self->slope,
        "estimator.avg_noise", self->avg_noise, "estimator.var_noise", self->var_noise,
        "detector.hypothesis", self->hypothesis, "detector.overuse_counter", self->overuse_counter,
        "detector.overuse_time", optional_double(self->has_overuse_time, self->overuse_time), "detector.threshold",
        self->threshold, "detector.last_update_ms",
        optional_long(self->has_detector_last_update, self->detector_last_update_ms),
        "rate_control.avg_max_bitrate_kbps", optional_double(self->has_avg_max, self->avg_max_bitrate_kbps),
        "rate_control.var_max_bitrate_kbps", self->var_max_bitrate_kbps, "rate_control.current_bitrate",
        self->current_bitrate, "rate_control.current_bitrate_initialized", self->current_bitrate_initialized,
        "rate_control.first_estimated_throughput_time",
        optional_long(self->has_first_estimated_throughput_time, self->first_estimated_throughput_time),
        "rate_control.last_change_ms", optional_long(self->has_last_change, self->last_change_ms),
        "rate_control.near_max", self->near_max, "rate_control.latest_estimated_throughput",
        self->latest_estimated_throughput, "rate_control.state", self->state, "last_update_ms",
        optional_long(self->has_last_update, self->last_update_ms));
}

static PyMethodDef Estimator_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Estimator_add, METH_FASTCALL | METH_KEYWORDS, add_doc},
    {"snapshot", (PyCFunction)Estimator_snapshot, METH_NOARGS, snapshot_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Estimator_members[] = {
    {"ssrcs", T_OBJECT_EX, offsetof(Estimator, ssrcs), READONLY,
     "Each SSRC seen and its last arrival time (ms), in order of first arrival (aiortc's ``ssrcs``)."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject EstimatorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._rate.RemoteBitrateEstimator",
    .tp_basicsize = sizeof(Estimator),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "aiortc 1.16's RemoteBitrateEstimator (aiortc/rate.py) in C: the same REMBs for the same packets.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Estimator_init,
    .tp_dealloc = (destructor)Estimator_dealloc,
    .tp_methods = Estimator_methods,
    .tp_members = Estimator_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "media._rate", "aiortc 1.16's receive-side bandwidth estimator in C (media/_rate.c).",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__rate(void)
{
    if (PyType_Ready(&EstimatorType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&EstimatorType);
    if (PyModule_AddObject(m, "RemoteBitrateEstimator", (PyObject *)&EstimatorType) < 0) {
        Py_DECREF(&EstimatorType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
