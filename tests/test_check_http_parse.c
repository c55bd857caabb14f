/*
 * test_check_http_parse.c - the bounded HTTP response parser on its own:
 * framing rules, byte-by-byte feeding, bounds, and random input (which
 * must only ever fail cleanly).
 */
#include <stdlib.h>
#include <string.h>

#include "check/http.h"
#include "tap.h"

/* Feed a whole response in pieces of `step` bytes, as reads would. */
static int feed(const char *resp, size_t len, size_t step, bool head_req,
                struct lb_http_resp *r)
{
    char buf[LB_HTTP_MAX_HEADER];
    size_t have = 0, pos = 0;
    int rc = 0;

    memset(r, 0, sizeof(*r));
    while (!r->head_done) {
        size_t n = len - pos < step ? len - pos : step;

        if (n == 0 || have + n > sizeof(buf))
            return rc < 0 ? rc : -100;
        memcpy(buf + have, resp + pos, n);
        have += n;
        pos += n;
        rc = lb_http_parse_head(r, buf, have, head_req);
        if (rc < 0)
            return rc;
        if (rc > 0) {
            size_t used;
            int b = lb_http_parse_body(r, buf + rc, have - (size_t)rc, &used);
            if (b != 0)
                return b;
        }
    }
    while (pos < len) {
        size_t n = len - pos < step ? len - pos : step, used;
        int b = lb_http_parse_body(r, resp + pos, n, &used);

        if (b != 0)
            return b;
        pos += n;
    }
    return r->body == LB_BODY_CLOSE ? 2 : 0; /* 2: complete at EOF */
}

static void test_framing(void)
{
    static const struct {
        const char *resp;
        bool head_req;
        int want; /* 1 complete, 0 wants more, 2 ends at close, <0 error */
        int status;
        int keepalive;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 1, 200, 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, 1, 200, 1},
        {"HTTP/1.1 204 No Content\r\n\r\n", false, 1, 204, 1},
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false, 1,
         304, 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, 1, 200, 1},
        {"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", false, 1, 200, 1},
        {"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", false, 1, 200, 1},
        {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
         false, 1, 200, 0},
        {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 1, 200, 0},
        {"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: "
         "2\r\n\r\nok",
         false, 1, 200, 1},
        {"HTTP/1.1 200 OK\r\n\r\nuntil close", false, 2, 200, 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", false, 2, 200,
         0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n"
         "Content-Length: 99\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
         false, 1, 200, 1},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         "A;x=\"y\"\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
         false, 1, 200, 1},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
         false, 0, 200, 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", false, 0, 200, 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false,
         -LB_HTTP_BAD_LENGTH, 0, 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n", false,
         -LB_HTTP_BAD_LENGTH, 0, 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
         false, -LB_HTTP_BAD_LENGTH, 0, 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", false,
         -LB_HTTP_BODY_TOO_LARGE, 0, 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         "fffffffffffffffff\r\n",
         false, -LB_HTTP_BAD_CHUNK, 0, 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         "200000\r\n",
         false, -LB_HTTP_BODY_TOO_LARGE, 0, 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         "3\r\nabcX\r\n",
         false, -LB_HTTP_BAD_CHUNK, 0, 0},
        {"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", false, -LB_HTTP_BAD_HEADER, 0,
         0},
        {"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n", false, -LB_HTTP_BAD_HEADER, 0,
         0},
        {"HTTP/1.1 200 OK\r\nA\rB: x\r\n\r\n", false, -LB_HTTP_BAD_HEADER, 0,
         0},
        {"HTTP/1.1 2x0 OK\r\n\r\n", false, -LB_HTTP_BAD_STATUS_LINE, 0, 0},
        {"HTTP/1.1 099 OK\r\n\r\n", false, -LB_HTTP_BAD_STATUS_LINE, 0, 0},
        {"HTTP/1.1 2000 OK\r\n\r\n", false, -LB_HTTP_BAD_STATUS_LINE, 0, 0},
        {"ICY 200 OK\r\n\r\n", false, -LB_HTTP_BAD_STATUS_LINE, 0, 0},
        {"HTTP/3.0 200 OK\r\n\r\n", false, -LB_HTTP_BAD_VERSION, 0, 0},
        {"\r\n\r\n", false, -LB_HTTP_BAD_STATUS_LINE, 0, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].resp);

        for (size_t step = 1; step <= len; step = step < 8 ? step + 1 : len) {
            struct lb_http_resp r;
            int rc = feed(cases[i].resp, len, step, cases[i].head_req, &r);

            if (rc == -100)
                rc = 0; /* the head never completed: wants more */
            if (rc != cases[i].want)
                fprintf(stderr, "case %zu step %zu: %d\n", i, step, rc);
            CHECK_EQ(rc, cases[i].want);
            if (cases[i].want > 0 || (cases[i].want == 0 && r.head_done)) {
                CHECK_EQ(r.status, cases[i].status);
                CHECK_EQ(r.keepalive, cases[i].keepalive);
            }
            if (step == len)
                break;
        }
    }
}

static void test_bounds(void)
{
    char *big = malloc(2 * LB_HTTP_MAX_HEADER);
    struct lb_http_resp r;
    size_t used, n = 0;
    int rc;

    /* a head that does not end within the bound */
    memset(big, 'a', 2 * LB_HTTP_MAX_HEADER);
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    memset(&r, 0, sizeof(r));
    CHECK_EQ(lb_http_parse_head(&r, big, LB_HTTP_MAX_HEADER - 1, false), 0);
    CHECK_EQ(lb_http_parse_head(&r, big, LB_HTTP_MAX_HEADER, false),
             -LB_HTTP_HEADER_TOO_LARGE);
    /* one that ends just past it */
    memcpy(big + LB_HTTP_MAX_HEADER - 2, "\r\n\r\n", 4);
    CHECK_EQ(lb_http_parse_head(&r, big, LB_HTTP_MAX_HEADER + 2, false),
             -LB_HTTP_HEADER_TOO_LARGE);

    /* chunks forever, and a body until close, stop at LB_HTTP_MAX_BODY */
    memset(&r, 0, sizeof(r));
    r.body = LB_BODY_CHUNKED;
    do {
        rc = lb_http_parse_body(&r, "1\r\nx\r\n", 6, &used);
        n++;
    } while (rc == 0 && n < 10 * 1000 * 1000);
    CHECK_EQ(rc, -LB_HTTP_BODY_TOO_LARGE);
    memset(&r, 0, sizeof(r));
    r.body = LB_BODY_CHUNKED;
    for (n = 0, rc = 0; rc == 0 && n < 100000; n++)
        rc = lb_http_parse_body(&r, n ? "a" : "1;", n ? 1 : 2, &used);
    CHECK_EQ(rc, -LB_HTTP_BAD_CHUNK); /* an endless extension */
    memset(&r, 0, sizeof(r));
    r.body = LB_BODY_CLOSE;
    for (n = 0, rc = 0; rc == 0 && n < 100000; n++)
        rc = lb_http_parse_body(&r, big, LB_HTTP_MAX_HEADER, &used);
    CHECK_EQ(rc, -LB_HTTP_BODY_TOO_LARGE);
    free(big);
}

/* Random bytes after a plausible prefix: any result but a crash, an
 * out-of-range length or a "used" beyond the input. */
static void test_random(void)
{
    static const char *prefixes[] = {
        "",
        "HTTP/1.1 ",
        "HTTP/1.1 200 OK\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    };
    char buf[512];
    unsigned seed = 12345;
    int bad = 0;

    for (int iter = 0; iter < 200000; iter++) {
        const char *pre = prefixes[iter % 4];
        size_t pl = strlen(pre), len = pl + (size_t)(rand_r(&seed) % 200);
        struct lb_http_resp r;
        int rc;

        memcpy(buf, pre, pl);
        for (size_t i = pl; i < len; i++) {
            int k = rand_r(&seed) % 8;
            buf[i] = k == 0   ? '\r'
                     : k == 1 ? '\n'
                     : k == 2 ? ':'
                     : k == 3 ? (char)('0' + rand_r(&seed) % 10)
                              : (char)(rand_r(&seed) & 0xff);
        }
        memset(&r, 0, sizeof(r));
        rc = lb_http_parse_head(&r, buf, len, false);
        if (rc > (int)len)
            bad++;
        if (rc > 0) {
            size_t used;
            int b = lb_http_parse_body(&r, buf + rc, len - (size_t)rc, &used);
            if (used > len - (size_t)rc || b > 1)
                bad++;
            if (r.status < 100 || r.status > 999)
                bad++;
        }
    }
    CHECK_EQ(bad, 0);
}

int main(void)
{
    TEST(test_framing());
    TEST(test_bounds());
    TEST(test_random());
    return tap_done("test_check_http_parse");
}
