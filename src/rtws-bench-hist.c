/*  rtws-bench-hist.c - latency histograms with exact counts.

    Log-linear like HdrHistogram: values below 2 * RB_HIST_SUB ns have a
    bucket each; above that, every power of two is cut into RB_HIST_SUB
    equal buckets, so a bucket is never wider than 1/1024 of its values.
    Every value is counted (no sampling, no reservoir), so percentiles over
    millions of deliveries are exact to that resolution, and histograms of
    several threads or processes merge by adding buckets.

    A histogram has one writer (the worker thread that owns it). Counters
    are atomics read with relaxed loads so that the coordinator may take a
    snapshot while a run goes on; the writer's increments compile to plain
    loads and stores.
*/
#include "rtws-bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RB_HIST_VALUE_MAX  ((UINT64_C (1) << 41) - 1)

static size_t
s_index (uint64_t value)
{
    if (value > RB_HIST_VALUE_MAX)
        value = RB_HIST_VALUE_MAX;
    if (value < 2 * RB_HIST_SUB)
        return (size_t) value;
    unsigned msb = 63u - (unsigned) __builtin_clzll (value);
    unsigned shift = msb - 10u;      //  1024 buckets per power of two
    return (size_t) shift * RB_HIST_SUB + (size_t) (value >> shift);
}

//  The middle of a bucket: what a value counted there is reported as.
static uint64_t
s_value (size_t index)
{
    if (index < 2 * RB_HIST_SUB)
        return index;
    unsigned shift = (unsigned) (index / RB_HIST_SUB) - 1u;
    uint64_t low = (uint64_t) (index - (size_t) shift * RB_HIST_SUB) << shift;
    return low + (((UINT64_C (1) << shift) - 1) >> 1);
}

rb_hist_t *
rb_hist_new (void)
{
    rb_hist_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    //  calloc: untouched buckets stay zero pages, so sparse use is cheap
    self->buckets = calloc (RB_HIST_BUCKETS, sizeof self->buckets [0]);
    if (!self->buckets) {
        free (self);
        return NULL;
    }
    atomic_init (&self->min, UINT64_MAX);
    return self;
}

void
rb_hist_destroy (rb_hist_t **self_p)
{
    if (self_p && *self_p) {
        free ((*self_p)->buckets);
        free (*self_p);
        *self_p = NULL;
    }
}

void
rb_hist_record (rb_hist_t *self, uint64_t value)
{
    rb_add (&self->buckets [s_index (value)], 1);
    rb_add (&self->count, 1);
    rb_add (&self->sum, value);
    if (value > rb_get (&self->max))
        atomic_store_explicit (&self->max, value, memory_order_relaxed);
    if (value < rb_get (&self->min))
        atomic_store_explicit (&self->min, value, memory_order_relaxed);
}

void
rb_hist_merge (rb_hist_t *self, const rb_hist_t *other)
{
    rb_hist_t *src = (rb_hist_t *) other;      //  relaxed loads only
    if (rb_get (&src->count) == 0)
        return;
    for (size_t i = 0; i < RB_HIST_BUCKETS; i++) {
        uint64_t n = rb_get (&src->buckets [i]);
        if (n)
            rb_add (&self->buckets [i], n);
    }
    rb_add (&self->count, rb_get (&src->count));
    rb_add (&self->sum, rb_get (&src->sum));
    if (rb_get (&src->max) > rb_get (&self->max))
        atomic_store_explicit (&self->max, rb_get (&src->max), memory_order_relaxed);
    if (rb_get (&src->min) < rb_get (&self->min))
        atomic_store_explicit (&self->min, rb_get (&src->min), memory_order_relaxed);
}

void
rb_hist_reset (rb_hist_t *self)
{
    for (size_t i = 0; i < RB_HIST_BUCKETS; i++)
        atomic_store_explicit (&self->buckets [i], 0, memory_order_relaxed);
    atomic_store_explicit (&self->count, 0, memory_order_relaxed);
    atomic_store_explicit (&self->sum, 0, memory_order_relaxed);
    atomic_store_explicit (&self->max, 0, memory_order_relaxed);
    atomic_store_explicit (&self->min, UINT64_MAX, memory_order_relaxed);
}

uint64_t
rb_hist_percentile (const rb_hist_t *other, double percentile)
{
    rb_hist_t *self = (rb_hist_t *) other;     //  relaxed loads only
    uint64_t count = rb_get (&self->count);
    if (count == 0)
        return 0;
    if (percentile >= 100.0)
        return rb_get (&self->max);
    //  The smallest value with at least percentile% of the counts at or below it
    double want = percentile / 100.0 * (double) count;
    uint64_t rank = (uint64_t) want;
    if ((double) rank < want || rank == 0)
        rank++;
    uint64_t seen = 0;
    for (size_t i = 0; i < RB_HIST_BUCKETS; i++) {
        seen += rb_get (&self->buckets [i]);
        if (seen >= rank) {
            uint64_t value = s_value (i);
            uint64_t max = rb_get (&self->max), min = rb_get (&self->min);
            return value > max? max: value < min? min: value;
        }
    }
    return rb_get (&self->max);
}

void
rb_hist_json (const rb_hist_t *other, FILE *out)
{
    rb_hist_t *self = (rb_hist_t *) other;
    uint64_t count = rb_get (&self->count);
    double mean = count? (double) rb_get (&self->sum) / (double) count / 1000.0: 0.0;
    fprintf (out, "{\"count\": %llu, \"min\": %.3f, \"mean\": %.3f, \"p50\": %.3f,"
             " \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, \"max\": %.3f}",
             (unsigned long long) count,
             count? (double) rb_get (&self->min) / 1000.0: 0.0, mean,
             (double) rb_hist_percentile (self, 50.0) / 1000.0,
             (double) rb_hist_percentile (self, 90.0) / 1000.0,
             (double) rb_hist_percentile (self, 99.0) / 1000.0,
             (double) rb_hist_percentile (self, 99.9) / 1000.0,
             (double) rb_get (&self->max) / 1000.0);
}

static int
s_write_all (int fd, const void *data, size_t size)
{
    const char *p = data;
    while (size) {
        ssize_t n = write (fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        size -= (size_t) n;
    }
    return 0;
}

static int
s_read_all (int fd, void *data, size_t size)
{
    char *p = data;
    while (size) {
        ssize_t n = read (fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        size -= (size_t) n;
    }
    return 0;
}

//  Wire form: count, sum, max, min, then (index, count) pairs of non-empty
//  buckets, ended by an index of UINT64_MAX.
int
rb_hist_write (const rb_hist_t *other, int fd)
{
    rb_hist_t *self = (rb_hist_t *) other;
    uint64_t head [4] = { rb_get (&self->count), rb_get (&self->sum),
                          rb_get (&self->max), rb_get (&self->min) };
    if (s_write_all (fd, head, sizeof head))
        return -1;
    for (size_t i = 0; i < RB_HIST_BUCKETS; i++) {
        uint64_t pair [2] = { i, rb_get (&self->buckets [i]) };
        if (pair [1] && s_write_all (fd, pair, sizeof pair))
            return -1;
    }
    uint64_t end [2] = { UINT64_MAX, 0 };
    return s_write_all (fd, end, sizeof end);
}

int
rb_hist_read_merge (rb_hist_t *self, int fd)
{
    uint64_t head [4];
    if (s_read_all (fd, head, sizeof head))
        return -1;
    while (true) {
        uint64_t pair [2];
        if (s_read_all (fd, pair, sizeof pair))
            return -1;
        if (pair [0] == UINT64_MAX)
            break;
        if (pair [0] >= RB_HIST_BUCKETS)
            return -1;
        rb_add (&self->buckets [pair [0]], pair [1]);
    }
    rb_add (&self->count, head [0]);
    rb_add (&self->sum, head [1]);
    if (head [2] > rb_get (&self->max))
        atomic_store_explicit (&self->max, head [2], memory_order_relaxed);
    if (head [3] < rb_get (&self->min))
        atomic_store_explicit (&self->min, head [3], memory_order_relaxed);
    return 0;
}
