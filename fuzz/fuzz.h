/*
 * fuzz.h - what the libFuzzer targets share: a reader over the input
 * bytes, and a check that aborts (so libFuzzer records the input) with a
 * message naming the broken promise.
 */
#ifndef LB_FUZZ_H
#define LB_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_ASSERT(cond)                                                      \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* Consumes the input from the front; past the end every read is zero, so
 * a target never has to check the length before taking a byte. */
struct fuzz_in {
    const uint8_t *p;
    size_t left;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
    if (!in->left)
        return 0;
    in->left--;
    return *in->p++;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
    uint16_t hi = fuzz_u8(in);
    return (uint16_t)(hi << 8 | fuzz_u8(in));
}

static inline uint32_t fuzz_u32(struct fuzz_in *in)
{
    uint32_t hi = fuzz_u16(in);
    return hi << 16 | fuzz_u16(in);
}

/* Up to `max` bytes; *len receives how many there were. */
static inline const uint8_t *fuzz_bytes(struct fuzz_in *in, size_t max,
                                        size_t *len)
{
    const uint8_t *p = in->p;

    *len = max < in->left ? max : in->left;
    in->p += *len;
    in->left -= *len;
    return p;
}

/* The bytes up to the next '\n' (not included) or the end. */
static inline const uint8_t *fuzz_line(struct fuzz_in *in, size_t *len)
{
    const uint8_t *p = in->p;
    const uint8_t *nl = in->left ? memchr(p, '\n', in->left) : NULL;

    *len = nl ? (size_t)(nl - p) : in->left;
    in->p += *len + (nl ? 1 : 0);
    in->left -= *len + (nl ? 1 : 0);
    return p;
}

#endif /* LB_FUZZ_H */
