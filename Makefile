# lb - build, test, benchmark.
#
#   make            build build/lb/core.so (the Lua module lb.core)
#   make test       C tests + busted specs (what .ci/run runs, via tools/test.sh)
#   make check-c    C unit tests only
#   make check-full C tests and stress tests under ASan+UBSan and TSan
#   make bench      benchmarks (bounded)
#   make demo       nginx (4 workers, one shared balancer) in front of
#                   loopback backends: checks, a passive ejection, metrics
#                   (KEEP=1: left running until Ctrl-C or make demo-stop)
#   make example NAME=static [ACTION=start|stop|reload]
#                   one of examples/, rendered with LB_PORT_BASE/LB_TMPDIR
#   make dist       the source rock build/dist/lb-<version>-1.src.rock from
#                   the tracked files (DIST_DIR=dir puts it elsewhere)
#   make clean      build/ and what `luarocks make` leaves in the tree

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror -std=gnu11
CPPFLAGS+= -Isrc -D_GNU_SOURCE
LDLIBS  := -lurcu-bp -lurcu-common -lcares -lcurl -ljansson -lssl -lcrypto -lpthread -lm
LUAJIT  ?= luajit
BUSTED  ?= busted

# Every C file under src/ (one level of folders): each folder is one room.
SRC := $(sort $(wildcard src/*.c src/*/*.c))
HDR := $(sort $(wildcard src/*.h src/*/*.h))
BUILD := build

C_TESTS := $(patsubst tests/%.c,%,$(wildcard tests/test_*.c))
STRESS  := $(patsubst tests/%.c,%,$(wildcard tests/stress_*.c))

all: $(BUILD)/lb/core.so

$(BUILD)/lb/core.so: $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -fPIC -shared -o $@ $(SRC) $(LDFLAGS) $(LDLIBS) $(EXTRA_LIBS)

comma := ,

# C tests link the core built with each variant's flags: every source is
# compiled once per variant into build/<variant>/liblb.a, linked whole (so
# constructors and the fork handler are in every test).
define c_variant
$(1)_OBJ := $$(patsubst src/%.c,$(BUILD)/$(1)/obj/%.o,$(SRC))
$(BUILD)/$(1)/obj/%.o: src/%.c $(HDR)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CPPFLAGS) -DLB_POISON $(2) $$(WARN) -c -o $$@ $$<
$(BUILD)/$(1)/liblb.a: $$($(1)_OBJ)
	@rm -f $$@
	ar rcs $$@ $$^
$(BUILD)/$(1)/%: tests/%.c $(BUILD)/$(1)/liblb.a $(HDR) $(wildcard tests/*.h)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CPPFLAGS) -DLB_POISON $(2) $$(WARN) -o $$@ $$< -Wl,--whole-archive $(BUILD)/$(1)/liblb.a -Wl,--no-whole-archive $$(LDLIBS) $$(EXTRA_LIBS)
endef
$(eval $(call c_variant,plain,-O2 -g))
# UBSan's alignment check is off: liburcu-bp hands out its reader records
# (declared 128-byte aligned) from an arena that does not honour that, and
# the inlined read-side lock would report it on every select.
$(eval $(call c_variant,asan,-O1 -g -fsanitize=address$(comma)undefined -fno-sanitize=alignment -fno-omit-frame-pointer -fno-sanitize-recover=all))
$(eval $(call c_variant,tsan,-O1 -g -fsanitize=thread))

check-c: $(addprefix $(BUILD)/plain/,$(C_TESTS))
	@set -e; for t in $^; do echo "== $$t"; $$t; done

check-asan: $(addprefix $(BUILD)/asan/,$(C_TESTS) $(STRESS))
	@set -e; for t in $^; do echo "== $$t"; ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 $$t; done

check-tsan: $(addprefix $(BUILD)/tsan/,$(C_TESTS) $(STRESS))
	@set -e; for t in $^; do echo "== $$t"; TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 setarch -R $$t; done

check-full: check-c check-asan check-tsan

spec: all
	$(LUAJIT) /usr/bin/busted $(BUSTED_ARGS)

test:
	sh tools/test.sh

bench: all
	sh bench/run.sh

# nginx with lb in balancer_by_lua against native upstreams (bench/nginx.sh),
# then the workers' CPU for health checks, private against shared
# (bench/checks_workers.lua), then requests/s with `keepalive` after and
# before `balancer_by_lua_block` (bench/keepalive_order.lua)
bench-nginx: all
	sh bench/nginx.sh
	$(LUAJIT) bench/checks_workers.lua
	$(LUAJIT) bench/keepalive_order.lua
.PHONY: bench-nginx

demo:
	KEEP=$(KEEP) sh tools/demo.sh

# stops a demo left running by make demo KEEP=1
demo-stop:
	sh tools/demo.sh stop

NAME ?=
ACTION ?= start
example: all
	@[ -n "$(NAME)" ] || { echo "make example NAME=static|discovery|passive|plain [ACTION=start|stop|reload]" >&2; exit 2; }
	sh tools/example.sh $(NAME) $(ACTION)

DIST_DIR ?= $(BUILD)/dist

dist:
	sh tools/dist.sh $(DIST_DIR)

# `luarocks make` compiles next to the sources and links lb/core.so at the
# top (the builtin backend has no out-of-tree build).
clean:
	rm -rf $(BUILD)
	rm -f src/*.o src/*/*.o lb/core.so
	if [ -d lb ]; then rmdir --ignore-fail-on-non-empty lb; fi

# ---- lint and format -----------------------------------------------------
C_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find src tests bench fuzz -name '*.[ch]')

format:
	clang-format -i $(C_FILES)

# Prints one line per file clang-format would change; fails if any.
format-check:
	@bad=0; for f in $(C_FILES); do \
	  if ! clang-format "$$f" | cmp -s - "$$f"; then echo "not formatted: $$f"; bad=$$((bad+1)); fi; \
	done; n=$$(echo $(C_FILES) | wc -w); \
	echo "format: $$((n-bad)) files formatted, $$bad not"; [ $$bad -eq 0 ]

luacheck:
	luacheck --no-color --formatter=plain lua spec examples bench tools

# The core also builds warning-free with clang.
build-clang:
	@mkdir -p $(BUILD)/clang
	clang $(CPPFLAGS) -O2 $(WARN) -fPIC -shared -o $(BUILD)/clang/core.so $(SRC) $(LDLIBS)

lint: format-check luacheck build-clang

.PHONY: all check-c check-asan check-tsan check-full spec test bench demo demo-stop example dist clean format format-check luacheck build-clang lint

# ---- fuzzing and soak ----------------------------------------------------
#
#   make fuzz        every libFuzzer target for FUZZ_SECONDS (default 45) each,
#                    new inputs kept in build/fuzz/corpus/ (not checked in)
#   make fuzz-check  every target over its checked-in corpus, then a short
#                    run (FUZZ_CHECK_SECONDS, default 15); one summary line
#                    per target, non-zero exit on any crash
#   make soak        tests/soak.c under ASan+UBSan (SOAK_SECONDS, default 60)
#   make soak-tsan   the same under TSan
#   make soak-events backends flap for SOAK_SECONDS with nobody draining
#                    their events: memory stays bounded (tests/test_records.c)
#
# The targets link the sources directly, like the C tests, with -DLB_POISON.
FUZZ_CC ?= clang
FUZZ_FLAGS := -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize=alignment \
	-fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_TARGETS := address http_response update select
FUZZ_BINS := $(addprefix $(BUILD)/fuzz/fuzz_,$(FUZZ_TARGETS))
FUZZ_SECONDS ?= 45
FUZZ_CHECK_SECONDS ?= 15
SOAK_SECONDS ?= 60

$(BUILD)/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz.h $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) -Ifuzz -DLB_POISON $(FUZZ_FLAGS) $(WARN) -o $@ $< $(SRC) $(LDLIBS) $(EXTRA_LIBS)

fuzz-build: $(FUZZ_BINS)

fuzz: $(FUZZ_BINS)
	@sh fuzz/run.sh run $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-check: $(FUZZ_BINS)
	@sh fuzz/run.sh check $(FUZZ_CHECK_SECONDS) $(FUZZ_TARGETS)

soak: $(BUILD)/asan/soak
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=16 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	SOAK_SECONDS=$(SOAK_SECONDS) $<

# the event queue while nobody drains: backends flap for SOAK_SECONDS
soak-events: $(BUILD)/plain/test_records
	LB_FLAP_SECONDS=$(SOAK_SECONDS) $<

soak-tsan: $(BUILD)/tsan/soak
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	SOAK_SECONDS=$(SOAK_SECONDS) setarch -R $<

.PHONY: fuzz fuzz-build fuzz-check soak soak-tsan soak-events

# ---- benchmarks (bench/run.sh, via `make bench`) --------------------------
#
# C benches link the sources directly, optimised, without LB_POISON;
# rcu_flavour.c is built once per liburcu flavour; the two floors of
# bench/select.lua are small shared libraries.
BENCH_CFLAGS := -O2 -g
LUAJIT_INC ?= /usr/include/luajit-2.1
BENCH_BINS := $(addprefix $(BUILD)/bench/,build select_c checker_scale rcu_memb \
	rcu_bp libfloor_ffi.so floor_cfunc.so)

$(BUILD)/bench/build $(BUILD)/bench/select_c $(BUILD)/bench/checker_scale: $(BUILD)/bench/%: bench/%.c bench/bench.h $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(BENCH_CFLAGS) $(WARN) -o $@ $< $(SRC) $(LDLIBS) $(EXTRA_LIBS)

$(BUILD)/bench/rcu_memb: bench/rcu_flavour.c bench/bench.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DFLAVOUR_MEMB $(BENCH_CFLAGS) $(WARN) -o $@ $< -lurcu-memb -lurcu-common -lpthread

$(BUILD)/bench/rcu_bp: bench/rcu_flavour.c bench/bench.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DFLAVOUR_BP $(BENCH_CFLAGS) $(WARN) -o $@ $< -lurcu-bp -lurcu-common -lpthread

$(BUILD)/bench/libfloor_ffi.so: bench/floor_ffi.c
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) $(WARN) -fPIC -shared -o $@ $<

$(BUILD)/bench/floor_cfunc.so: bench/floor_cfunc.c
	@mkdir -p $(dir $@)
	$(CC) -I$(LUAJIT_INC) $(BENCH_CFLAGS) $(WARN) -fPIC -shared -o $@ $<

bench-build: all $(BENCH_BINS)

.PHONY: bench-build
