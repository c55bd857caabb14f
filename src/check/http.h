/*
 * http.h - the HTTP kind's private header: the bounded HTTP/1.x response
 * parser (http_parse.c, also driven by tests/test_check_http_parse.c and
 * fuzz/fuzz_http_response.c) and the kind's configuration (http_config.c),
 * read by its probe (http.c).  Pure functions and immutable data: any
 * thread.
 */
#ifndef LB_CHECK_HTTP_H
#define LB_CHECK_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "check/check.h"

/* Response parser state (http_parse.c).  Fields after `status` are what a
 * caller reads once the head is complete. */
enum lb_http_body {
    LB_BODY_NONE,
    LB_BODY_LENGTH,
    LB_BODY_CHUNKED,
    LB_BODY_CLOSE
};

struct lb_http_resp {
    /* head */
    int status;
    int minor; /* HTTP/1.minor */
    bool keepalive;
    bool head_done;
    int body;        /* enum lb_http_body */
    uint64_t length; /* LB_BODY_LENGTH: bytes left */
    uint64_t body_seen;
    /* chunked decoder */
    int cstate;
    uint64_t chunk_left;
    unsigned line_len;
    unsigned hex_digits;
    bool body_done;
};

/* Parse the response head from buf[0..len).  Returns the head's length
 * when complete (resp->head_done set), 0 when more bytes are needed, or
 * -LB_HTTP_BAD_* on a malformed or oversized head.  `head_request`: the
 * response to HEAD has no body. */
int lb_http_parse_head(struct lb_http_resp *r, const char *buf, size_t len,
                       bool head_request);
/* Feed body bytes; returns 0 (more wanted), 1 (body complete: r->body_done)
 * or -LB_HTTP_BAD_*.  *used receives how many bytes belonged to the body. */
int lb_http_parse_body(struct lb_http_resp *r, const char *buf, size_t len,
                       size_t *used);

/* The HTTP kind's configuration (lb_check_cfg.kind_cfg): the request is
 * prefix + Host value + suffix. */
struct lb_http_cfg {
    bool head;      /* HEAD: the response has no body */
    bool keepalive; /* reuse_connection */
    char *host;     /* NULL: the backend's address text */
    char *prefix;
    size_t prefix_len;
    char *suffix;
    size_t suffix_len;
    uint16_t *expected;
    size_t nexpected;
};

/* http_config.c: lb_check_kind_http's config and cfg_free. */
int lb_http_config(struct lb_check_cfg *c, const lb_check_config *in,
                   const char **err);
void lb_http_cfg_free(struct lb_check_cfg *c);

#endif /* LB_CHECK_HTTP_H */
