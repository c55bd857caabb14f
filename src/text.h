/*
 * text.h - copying a string given as pointer and length, for every room of
 * the core (checks, discovery): lb_text_dup returns a NUL-terminated copy
 * of the len bytes at s that the caller frees, or NULL when out of memory.
 * Pure, any thread.
 */
#ifndef LB_TEXT_H
#define LB_TEXT_H

#include <stdlib.h>
#include <string.h>

static inline char *lb_text_dup(const char *s, size_t len)
{
    char *d = malloc(len + 1);

    if (d) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

#endif
