/*
 * http_parse.c - a bounded HTTP/1.x response parser for health checks.
 *
 * It takes no risk: the head must end within LB_HTTP_MAX_HEADER bytes, the
 * body (framing included) within LB_HTTP_MAX_BODY, every number is checked
 * for overflow, and anything it does not understand is a failed check,
 * never a guess.  It keeps no pointers into the caller's buffer, so the
 * caller may reuse the buffer for every read of the body.
 *
 * Framing follows RFC 9112 section 6.3: no body for HEAD, 1xx, 204 and
 * 304; chunked when it is the last transfer coding; read-until-close for
 * any other transfer coding; else Content-Length (several values must
 * agree); else read-until-close.
 */
#include <string.h>
#include <strings.h>

#include "check/http.h"

enum chunk_state {
    C_SIZE,
    C_EXT,
    C_SIZE_LF,
    C_DATA,
    C_DATA_CR,
    C_DATA_LF,
    C_TRAILER,
    C_TRAILER_LINE,
    C_END_LF
};

/* Longest chunk-size line (extensions included) or trailer line. */
#define MAX_LINE 4096
/* 15 hex digits cannot overflow 64 bits; LB_HTTP_MAX_BODY needs 6. */
#define MAX_HEX_DIGITS 15

static const char *find_head_end(const char *buf, size_t len, size_t *end);
static int parse_status_line(struct lb_http_resp *r, const char *p, size_t n);
static int parse_header(struct lb_http_resp *r, const char *p, size_t n,
                        bool *chunked, bool *other_coding, bool *has_length,
                        bool *close, bool *keep);
static bool has_token(const char *v, size_t n, const char *tok);
static int hexval(char ch);

/* End of the head: the first empty line (CRLF CRLF, or bare LFs, which
 * RFC 9112 lets a recipient accept). */
static const char *find_head_end(const char *buf, size_t len, size_t *end)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i + 1 < len && buf[i + 1] == '\n') {
            *end = i + 2;
            return buf;
        }
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
            *end = i + 3;
            return buf;
        }
    }
    return NULL;
}

/* "HTTP/1.x SSS[ reason]" */
static int parse_status_line(struct lb_http_resp *r, const char *p, size_t n)
{
    if (n < 7 || memcmp(p, "HTTP/", 5) != 0)
        return -LB_HTTP_BAD_STATUS_LINE;
    if (p[5] != '1' || p[6] != '.')
        return -LB_HTTP_BAD_VERSION;
    if (n < 12)
        return -LB_HTTP_BAD_STATUS_LINE;
    if (p[7] < '0' || p[7] > '9' || p[8] != ' ')
        return -LB_HTTP_BAD_STATUS_LINE;
    r->minor = p[7] - '0';
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return -LB_HTTP_BAD_STATUS_LINE;
    if (p[9] == '0')
        return -LB_HTTP_BAD_STATUS_LINE;
    if (n > 12 && p[12] != ' ')
        return -LB_HTTP_BAD_STATUS_LINE;
    for (size_t i = 12; i < n; i++)
        if ((unsigned char)p[i] < 0x20 && p[i] != '\t')
            return -LB_HTTP_BAD_STATUS_LINE;
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    return 0;
}

/* Case-insensitive search for a comma-separated token in a field value. */
static bool has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i = 0;

    while (i < n) {
        size_t s, e;

        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        s = i;
        while (i < n && v[i] != ',')
            i++;
        e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return true;
    }
    return false;
}

static int parse_header(struct lb_http_resp *r, const char *p, size_t n,
                        bool *chunked, bool *other_coding, bool *has_length,
                        bool *close, bool *keep)
{
    const char *colon = memchr(p, ':', n);
    size_t nl, vs, ve;

    /* obs-fold (a line starting with white space) is rejected, as RFC 9112
     * section 5.2 allows outside of message/http. */
    if (!colon || colon == p)
        return -LB_HTTP_BAD_HEADER;
    nl = (size_t)(colon - p);
    for (size_t i = 0; i < nl; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch <= 0x20 || ch >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", ch))
            return -LB_HTTP_BAD_HEADER;
    }
    vs = nl + 1;
    ve = n;
    while (vs < ve && (p[vs] == ' ' || p[vs] == '\t'))
        vs++;
    while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t'))
        ve--;
    for (size_t i = vs; i < ve; i++) {
        unsigned char ch = (unsigned char)p[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return -LB_HTTP_BAD_HEADER;
    }

    if (nl == 14 && strncasecmp(p, "content-length", 14) == 0) {
        uint64_t v = 0;

        if (ve == vs || ve - vs > 18)
            return -LB_HTTP_BAD_LENGTH;
        for (size_t i = vs; i < ve; i++) {
            if (p[i] < '0' || p[i] > '9')
                return -LB_HTTP_BAD_LENGTH;
            v = v * 10 + (uint64_t)(p[i] - '0');
        }
        if (*has_length && v != r->length)
            return -LB_HTTP_BAD_LENGTH;
        *has_length = true;
        r->length = v;
    } else if (nl == 17 && strncasecmp(p, "transfer-encoding", 17) == 0) {
        /* Only the last coding decides the framing. */
        size_t s = ve;

        while (s > vs && p[s - 1] != ',')
            s--;
        while (s < ve && (p[s] == ' ' || p[s] == '\t'))
            s++;
        if (ve - s == 7 && strncasecmp(p + s, "chunked", 7) == 0) {
            *chunked = true;
            *other_coding = false;
        } else if (ve > vs) {
            *chunked = false;
            *other_coding = true;
        }
    } else if (nl == 10 && strncasecmp(p, "connection", 10) == 0) {
        if (has_token(p + vs, ve - vs, "close"))
            *close = true;
        if (has_token(p + vs, ve - vs, "keep-alive"))
            *keep = true;
    }
    return 0;
}

int lb_http_parse_head(struct lb_http_resp *r, const char *buf, size_t len,
                       bool head_request)
{
    bool chunked = false, other = false, has_length = false;
    bool close = false, keep = false;
    size_t end, pos = 0;
    int rc;

    /* A response starts with "HTTP/": anything else (a banner of another
     * protocol) fails with its first bytes instead of at the timeout. */
    if (memcmp(buf, "HTTP/", len < 5 ? len : 5) != 0)
        return -LB_HTTP_BAD_STATUS_LINE;
    if (!find_head_end(buf, len, &end))
        return len >= LB_HTTP_MAX_HEADER ? -LB_HTTP_HEADER_TOO_LARGE : 0;
    if (end > LB_HTTP_MAX_HEADER)
        return -LB_HTTP_HEADER_TOO_LARGE;

    r->length = 0;
    for (int line = 0;; line++) {
        const char *nl = memchr(buf + pos, '\n', end - pos);
        size_t n = (size_t)(nl - (buf + pos));

        if (n > 0 && buf[pos + n - 1] == '\r')
            n--;
        if (n == 0) {
            if (line == 0)
                return -LB_HTTP_BAD_STATUS_LINE;
            break;
        }
        if (memchr(buf + pos, '\r', n) || memchr(buf + pos, '\0', n))
            return line ? -LB_HTTP_BAD_HEADER : -LB_HTTP_BAD_STATUS_LINE;
        rc = line == 0 ? parse_status_line(r, buf + pos, n)
                       : parse_header(r, buf + pos, n, &chunked, &other,
                                      &has_length, &close, &keep);
        if (rc < 0)
            return rc;
        pos = (size_t)(nl - buf) + 1;
    }

    r->keepalive = r->minor >= 1 ? !close : (keep && !close);
    if (head_request || r->status < 200 || r->status == 204 ||
        r->status == 304) {
        r->body = LB_BODY_NONE;
    } else if (chunked) {
        r->body = LB_BODY_CHUNKED;
        r->cstate = C_SIZE;
    } else if (other) {
        r->body = LB_BODY_CLOSE;
    } else if (has_length) {
        if (r->length > LB_HTTP_MAX_BODY)
            return -LB_HTTP_BODY_TOO_LARGE;
        r->body = r->length ? LB_BODY_LENGTH : LB_BODY_NONE;
    } else {
        r->body = LB_BODY_CLOSE;
    }
    if (r->body == LB_BODY_CLOSE)
        r->keepalive = false;
    r->body_done = r->body == LB_BODY_NONE;
    r->head_done = true;
    return (int)end;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int lb_http_parse_body(struct lb_http_resp *r, const char *buf, size_t len,
                       size_t *used)
{
    size_t i = 0;

    *used = 0;
    if (r->body_done)
        return 1;
    switch (r->body) {
    case LB_BODY_LENGTH: {
        size_t take = len < r->length ? len : (size_t)r->length;

        r->length -= take;
        *used = take;
        if (r->length == 0)
            r->body_done = true;
        return r->body_done;
    }
    case LB_BODY_CLOSE:
        r->body_seen += len;
        *used = len;
        return r->body_seen > LB_HTTP_MAX_BODY ? -LB_HTTP_BODY_TOO_LARGE : 0;
    case LB_BODY_CHUNKED:
        break;
    default:
        r->body_done = true;
        return 1;
    }

    while (i < len && !r->body_done) {
        char ch = buf[i];

        if (r->cstate == C_DATA) {
            size_t take = len - i;

            if (take > r->chunk_left)
                take = (size_t)r->chunk_left;
            r->chunk_left -= take;
            r->body_seen += take;
            i += take;
            if (r->chunk_left == 0)
                r->cstate = C_DATA_CR;
            continue;
        }
        i++;
        r->body_seen++;
        if (++r->line_len > MAX_LINE)
            return -LB_HTTP_BAD_CHUNK;
        switch (r->cstate) {
        case C_SIZE: {
            int v = hexval(ch);

            if (v >= 0) {
                if (++r->hex_digits > MAX_HEX_DIGITS)
                    return -LB_HTTP_BAD_CHUNK;
                r->chunk_left = r->chunk_left * 16 + (uint64_t)v;
            } else if (r->hex_digits == 0) {
                return -LB_HTTP_BAD_CHUNK;
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                r->cstate = C_EXT;
            } else if (ch == '\r') {
                r->cstate = C_SIZE_LF;
            } else if (ch == '\n') {
                goto size_done;
            } else {
                return -LB_HTTP_BAD_CHUNK;
            }
            break;
        }
        case C_EXT:
            if (ch == '\n')
                goto size_done;
            if ((unsigned char)ch < 0x20 && ch != '\t' && ch != '\r')
                return -LB_HTTP_BAD_CHUNK;
            break;
        case C_SIZE_LF:
            if (ch != '\n')
                return -LB_HTTP_BAD_CHUNK;
        size_done:
            if (r->chunk_left > LB_HTTP_MAX_BODY)
                return -LB_HTTP_BODY_TOO_LARGE;
            r->hex_digits = 0;
            r->line_len = 0;
            r->cstate = r->chunk_left ? C_DATA : C_TRAILER;
            break;
        case C_DATA_CR:
            r->line_len = 0;
            if (ch == '\r')
                r->cstate = C_DATA_LF;
            else if (ch == '\n')
                r->cstate = C_SIZE;
            else
                return -LB_HTTP_BAD_CHUNK;
            break;
        case C_DATA_LF:
            if (ch != '\n')
                return -LB_HTTP_BAD_CHUNK;
            r->line_len = 0;
            r->cstate = C_SIZE;
            break;
        case C_TRAILER:
            if (ch == '\r') {
                r->cstate = C_END_LF;
            } else if (ch == '\n') {
                r->body_done = true;
            } else {
                r->cstate = C_TRAILER_LINE;
            }
            break;
        case C_TRAILER_LINE:
            if (ch == '\n') {
                r->line_len = 0;
                r->cstate = C_TRAILER;
            }
            break;
        case C_END_LF:
            if (ch != '\n')
                return -LB_HTTP_BAD_CHUNK;
            r->body_done = true;
            break;
        }
        if (r->body_seen > LB_HTTP_MAX_BODY)
            return -LB_HTTP_BODY_TOO_LARGE;
    }
    if (r->body_seen > LB_HTTP_MAX_BODY)
        return -LB_HTTP_BODY_TOO_LARGE;
    *used = i;
    return r->body_done;
}
