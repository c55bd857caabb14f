/*
 * fuzz_http_response.c - the HTTP health check's response parser
 * (src/check/http_parse.c) on arbitrary bytes, delivered whole and split
 * into several reads.
 *
 * Input: one flags byte (bit 0: the request was HEAD; bits 1-2: which
 * statuses are expected), one byte k (low 3 bits: k cut points), k 16-bit
 * cut offsets, then the bytes the server sends before it closes.
 *
 * The driver below does what http_step (src/check/http.c) does with
 * what a socket read returns: the head accumulates in a buffer of
 * LB_HTTP_MAX_HEADER bytes (each read bounded by the room left) and is
 * parsed again after every read; once the head is complete, the status is
 * checked and the rest of the buffer, then every further read, goes to the
 * body parser; the peer's close ends a read-until-close body and fails
 * anything else.
 *
 * Promises checked:
 *   - no crash, no sanitizer report, no read or write outside the buffer;
 *   - the parsers' return values stay in their ranges (a head length
 *     within what was read, body bytes used within what was given);
 *   - the verdict (healthy, or the error kind and detail, and the status)
 *     is the same whether the bytes come in one read, cut at the given
 *     points, or one byte per read.
 */
#include <stdbool.h>

#include "check/http.h"
#include "fuzz.h"

#define V_OK 1
#define V_FAIL 2

struct verdict {
    int result;
    int kind;
    int detail;
    int status;
};

static const uint16_t expect_sets[4][3] = {
    {200, 0, 0}, {200, 204, 301}, {101, 0, 0}, {404, 500, 0}};
static const size_t expect_counts[4] = {1, 3, 1, 2};

struct driver {
    struct lb_http_resp resp;
    char *in; /* exactly LB_HTTP_MAX_HEADER bytes, so ASan sees overruns */
    size_t in_len;
    bool head_req;
    int set;
    struct verdict v;
};

static bool expected(const struct driver *d, int status)
{
    for (size_t i = 0; i < expect_counts[d->set]; i++)
        if (expect_sets[d->set][i] == status)
            return true;
    return false;
}

static void fail(struct driver *d, int kind, int detail)
{
    d->v.result = V_FAIL;
    d->v.kind = kind;
    d->v.detail = detail;
}

static void body(struct driver *d, const char *p, size_t len)
{
    size_t used = (size_t)-1;
    int rc = lb_http_parse_body(&d->resp, p, len, &used);

    FUZZ_ASSERT(rc >= -LB_HTTP_BAD_VERSION && rc <= 1);
    if (rc < 0) {
        fail(d, LB_CHECK_ERR_HTTP_MALFORMED, -rc);
        return;
    }
    FUZZ_ASSERT(used <= len);
    if (rc == 1) {
        FUZZ_ASSERT(d->resp.body_done);
        d->v.result = V_OK;
    } else {
        FUZZ_ASSERT(used == len);
    }
}

/* One read of `len` bytes (len > 0); returns how many were taken. */
static size_t deliver(struct driver *d, const char *p, size_t len)
{
    if (d->resp.head_done) {
        size_t n = len < LB_HTTP_MAX_HEADER ? len : LB_HTTP_MAX_HEADER;

        memcpy(d->in, p, n);
        body(d, d->in, n);
        return n;
    } else {
        size_t room = LB_HTTP_MAX_HEADER - d->in_len;
        size_t n = len < room ? len : room;
        int rc;

        FUZZ_ASSERT(room > 0);
        memcpy(d->in + d->in_len, p, n);
        d->in_len += n;
        rc = lb_http_parse_head(&d->resp, d->in, d->in_len, d->head_req);
        FUZZ_ASSERT(rc >= -LB_HTTP_BAD_VERSION);
        FUZZ_ASSERT(rc <= (int)d->in_len);
        if (rc < 0) {
            fail(d, LB_CHECK_ERR_HTTP_MALFORMED, -rc);
        } else if (rc > 0) {
            FUZZ_ASSERT(d->resp.head_done);
            FUZZ_ASSERT(d->resp.status >= 100 && d->resp.status <= 999);
            d->v.status = d->resp.status;
            if (!expected(d, d->resp.status))
                fail(d, LB_CHECK_ERR_HTTP_STATUS, d->resp.status);
            else
                body(d, d->in + rc, d->in_len - (size_t)rc);
        } else {
            FUZZ_ASSERT(!d->resp.head_done);
        }
        return n;
    }
}

/* Feed data[0..len) in reads ending at the sorted cut points, then close. */
static struct verdict run(const uint8_t *data, size_t len, const size_t *cuts,
                          size_t ncuts, bool head_req, int set)
{
    struct driver d;
    size_t pos = 0, c = 0;

    memset(&d, 0, sizeof(d));
    d.in = malloc(LB_HTTP_MAX_HEADER);
    FUZZ_ASSERT(d.in);
    d.head_req = head_req;
    d.set = set;
    while (pos < len && !d.v.result) {
        size_t end = len;

        while (c < ncuts && cuts[c] <= pos)
            c++;
        if (c < ncuts && cuts[c] < len)
            end = cuts[c];
        while (pos < end && !d.v.result)
            pos += deliver(&d, (const char *)data + pos, end - pos);
    }
    if (!d.v.result) {
        if (d.resp.head_done && d.resp.body == LB_BODY_CLOSE)
            d.v.result = V_OK;
        else
            fail(&d, LB_CHECK_ERR_CLOSED, LB_CHECK_PHASE_RESPONSE);
    }
    free(d.in);
    return d.v;
}

static void same(const struct verdict *a, const struct verdict *b)
{
    FUZZ_ASSERT(a->result == b->result);
    FUZZ_ASSERT(a->kind == b->kind);
    FUZZ_ASSERT(a->detail == b->detail);
    FUZZ_ASSERT(a->status == b->status);
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    uint8_t flags = fuzz_u8(&in);
    size_t ncuts = fuzz_u8(&in) & 7, len;
    size_t cuts[8];
    const uint8_t *resp;
    struct verdict whole, split;
    bool head_req = flags & 1;
    int set = (flags >> 1) & 3;

    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = fuzz_u16(&in);
    resp = fuzz_bytes(&in, in.left, &len);
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = len ? cuts[i] % len : 0;
    qsort(cuts, ncuts, sizeof(cuts[0]), cmp_size);

    whole = run(resp, len, NULL, 0, head_req, set);
    split = run(resp, len, cuts, ncuts, head_req, set);
    same(&whole, &split);
    if (len <= 512) {
        size_t every[512];

        for (size_t i = 0; i < len; i++)
            every[i] = i + 1;
        split = run(resp, len, every, len, head_req, set);
        same(&whole, &split);
    }
    return 0;
}
