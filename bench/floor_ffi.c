/*
 * floor_ffi.c - the empty C function bench/select.lua calls through the
 * FFI: the floor under any FFI call (argument marshalling, the call, the
 * return), built as build/bench/libfloor_ffi.so.
 */
#include <stddef.h>

void lb_bench_nop(const char *key, size_t len);

void lb_bench_nop(const char *key, size_t len)
{
    (void)key;
    (void)len;
}
