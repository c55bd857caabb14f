/*
 * floor_cfunc.c - a trivial lua_CFunction for bench/select.lua: the floor
 * under any classic Lua/C API call (LuaJIT cannot compile the call, it
 * leaves the trace and stitches a new one after it).  Built against
 * LuaJIT's headers as build/bench/floor_cfunc.so.
 */
#include <lauxlib.h>
#include <lua.h>

int luaopen_floor_cfunc(lua_State *L);

/* Takes the key, returns it, as select(key) takes a key and returns one
 * value. */
static int nop(lua_State *L)
{
    lua_settop(L, 1);
    return 1;
}

int luaopen_floor_cfunc(lua_State *L)
{
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, nop);
    lua_setfield(L, -2, "nop");
    return 1;
}
