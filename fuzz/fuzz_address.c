/*
 * fuzz_address.c - lb_backend_parse and lb_backend_compare on arbitrary
 * bytes.
 *
 * The input is address text, parsed whole; when it holds a '\n', the parts
 * before and after it are parsed as two more addresses and compared.  The
 * weight (in and out of range) is chosen by the input's length, so the
 * three parses share it.
 *
 * Promises checked:
 *   - no crash and no sanitizer report, whatever the bytes;
 *   - a parsed backend is well formed: known family, weight as given,
 *     addr and host NUL-terminated at their lengths, port set for inet;
 *   - its canonical text parses again to an identical backend (byte for
 *     byte), so canonical text is a fixed point;
 *   - compare is a consistent order: compare(a, a) = 0, compare(a, b) =
 *     -compare(b, a), and 0 exactly when the canonical texts are equal
 *     (the weights are).
 */
#include "fuzz.h"
#include "lb.h"

static const uint32_t weights[] = {
    1, 2, LB_MAX_WEIGHT, 0, LB_MAX_WEIGHT + 1, 7, UINT32_MAX};
#define NWEIGHTS (sizeof(weights) / sizeof(weights[0]))

static void check_well_formed(const lb_backend *b, uint32_t weight)
{
    FUZZ_ASSERT(b->family <= LB_AF_UNIX);
    FUZZ_ASSERT(b->weight == weight);
    FUZZ_ASSERT(b->enable == -1);
    FUZZ_ASSERT(b->addr_len > 0 && b->addr_len < LB_ADDR_MAX);
    FUZZ_ASSERT(b->host_len > 0 && b->host_len < LB_ADDR_MAX);
    FUZZ_ASSERT(b->addr[b->addr_len] == '\0');
    FUZZ_ASSERT(b->host[b->host_len] == '\0');
    FUZZ_ASSERT(strlen(b->addr) == b->addr_len);
    FUZZ_ASSERT(strlen(b->host) == b->host_len);
    if (b->family == LB_AF_UNIX) {
        FUZZ_ASSERT(b->port == 0);
        FUZZ_ASSERT(memcmp(b->addr, "unix:", 5) == 0);
        FUZZ_ASSERT(strcmp(b->addr + 5, b->host) == 0);
    } else {
        FUZZ_ASSERT(b->port != 0);
    }
}

/* Parse; on success check the backend and its canonical round trip.
 * Returns 1 when parsed. */
static int parse_checked(const uint8_t *p, size_t len, uint32_t weight,
                         lb_backend *out)
{
    lb_backend again;
    const char *err = NULL;

    if (lb_backend_parse((const char *)p, len, weight, out, &err) != LB_OK) {
        FUZZ_ASSERT(err != NULL && err[0] != '\0');
        return 0;
    }
    check_well_formed(out, weight);
    err = NULL;
    FUZZ_ASSERT(lb_backend_parse(out->addr, out->addr_len, weight, &again,
                                 &err) == LB_OK);
    FUZZ_ASSERT(memcmp(out, &again, sizeof(again)) == 0);
    FUZZ_ASSERT(lb_backend_compare(out, &again) == 0);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t weight = weights[size % NWEIGHTS];
    const uint8_t *nl = size ? memchr(data, '\n', size) : NULL;
    lb_backend whole, a, b;

    parse_checked(data, size, weight, &whole);
    if (nl) {
        size_t la = (size_t)(nl - data);
        int ok_a = parse_checked(data, la, weight, &a);
        int ok_b = parse_checked(nl + 1, size - la - 1, weight, &b);

        if (ok_a && ok_b) {
            int ab = lb_backend_compare(&a, &b);
            int ba = lb_backend_compare(&b, &a);

            FUZZ_ASSERT(ab >= -1 && ab <= 1);
            FUZZ_ASSERT(ab == -ba);
            FUZZ_ASSERT((ab == 0) == (strcmp(a.addr, b.addr) == 0));
            /* Families order first: IPv4 < IPv6 < unix (Pingora). */
            if (a.family != b.family)
                FUZZ_ASSERT(ab == (a.family < b.family ? -1 : 1));
            /* The weight breaks ties of the same address. */
            if (ab == 0 && weight < LB_MAX_WEIGHT) {
                lb_backend heavier = b;
                heavier.weight = weight + 1;
                FUZZ_ASSERT(lb_backend_compare(&a, &heavier) == -1);
                FUZZ_ASSERT(lb_backend_compare(&heavier, &a) == 1);
            }
        }
    }
    return 0;
}
