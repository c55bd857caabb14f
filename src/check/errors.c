/*
 * errors.c - messages for check errors (LB_CHECK_ERR_* with their detail),
 * what status() shows as a backend's last error.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "lb.h"

static const char *phase_name(int phase);
static const char *malformed_name(int detail);

static const char *phase_name(int phase)
{
    switch (phase) {
    case LB_CHECK_PHASE_CONNECT:
        return "connect";
    case LB_CHECK_PHASE_TLS:
        return "TLS handshake";
    case LB_CHECK_PHASE_REQUEST:
        return "request";
    case LB_CHECK_PHASE_RESPONSE:
        return "response";
    default:
        return "check";
    }
}

static const char *malformed_name(int detail)
{
    switch (detail) {
    case LB_HTTP_BAD_STATUS_LINE:
        return "bad status line";
    case LB_HTTP_BAD_HEADER:
        return "bad header";
    case LB_HTTP_HEADER_TOO_LARGE:
        return "header too large";
    case LB_HTTP_BAD_LENGTH:
        return "bad Content-Length";
    case LB_HTTP_BAD_CHUNK:
        return "bad chunked encoding";
    case LB_HTTP_BODY_TOO_LARGE:
        return "body too large";
    case LB_HTTP_BAD_VERSION:
        return "unsupported HTTP version";
    default:
        return "malformed";
    }
}

int lb_check_error_text(int kind, int detail, char *buf, size_t size)
{
    char tmp[128];
    const char *s;

    switch (kind) {
    case LB_CHECK_ERR_NONE:
        return snprintf(buf, size, "%s", "");
    case LB_CHECK_ERR_CONNECT:
        return snprintf(buf, size, "connect: %s",
                        strerror_r(detail, tmp, sizeof(tmp)));
    case LB_CHECK_ERR_TIMEOUT:
        return snprintf(buf, size, "timeout: %s", phase_name(detail));
    case LB_CHECK_ERR_TLS_HANDSHAKE:
        s = detail ? ERR_reason_error_string(
                         ERR_PACK(ERR_LIB_SSL, 0, (unsigned)detail))
                   : NULL;
        return snprintf(buf, size, "TLS handshake: %s", s ? s : "failed");
    case LB_CHECK_ERR_TLS_VERIFY:
        return snprintf(buf, size, "TLS verify: %s",
                        X509_verify_cert_error_string(detail));
    case LB_CHECK_ERR_HTTP_STATUS:
        return snprintf(buf, size, "unexpected status %d", detail);
    case LB_CHECK_ERR_HTTP_MALFORMED:
        return snprintf(buf, size, "malformed response: %s",
                        malformed_name(detail));
    case LB_CHECK_ERR_CLOSED:
        return snprintf(buf, size, "connection closed during %s",
                        phase_name(detail));
    case LB_CHECK_ERR_IO:
        return snprintf(buf, size, "I/O: %s",
                        strerror_r(detail, tmp, sizeof(tmp)));
    case LB_CHECK_ERR_RESOURCE:
        return snprintf(buf, size, "no resources: %s",
                        strerror_r(detail, tmp, sizeof(tmp)));
    case LB_CHECK_ERR_CUSTOM:
        return snprintf(buf, size, "check failed");
    case LB_CHECK_ERR_EJECTED:
        return snprintf(buf, size, "ejected: %d consecutive failure%s", detail,
                        detail == 1 ? "" : "s");
    default:
        return snprintf(buf, size, "unknown error %d/%d", kind, detail);
    }
}
