# moat: one Makefile.  `make` builds build/moatd and build/moatctl;
# `make SANITIZE=1` builds the same into build-asan/ with ASan+UBSan;
# `make unit` runs the cmocka tests; `make fuzz` builds the libFuzzer
# harnesses with clang into build-fuzz/.

PKGS	:= libevent libevent_pthreads openssl
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD	?= build-asan
OPT	:= -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
	   -fno-sanitize-recover=undefined
LDSAN	:= -fsanitize=address,undefined
else
BUILD	?= build
OPT	:= -O2 -D_FORTIFY_SOURCE=2
LDSAN	:=
endif

CC	?= cc
WARN	:= -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	   -Wmissing-prototypes -Wformat=2 -Wvla
CFLAGS	+= -std=c11 -D_GNU_SOURCE -g -fstack-protector-strong $(OPT) $(WARN) \
	   $(shell pkg-config --cflags $(PKGS)) -Isrc -MMD -MP
LDLIBS	:= $(shell pkg-config --libs $(PKGS)) -lz -lpthread -lm
LDFLAGS	+= $(LDSAN)

MAINS	:= src/moatd.c src/moatctl.c
LIB_SRCS := $(filter-out $(MAINS),$(wildcard src/*.c))
LIB_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/obj/%.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNITS	:= $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/%)
FUZZ_SRCS := $(wildcard fuzz/fuzz_*.c)
FUZZERS	:= $(FUZZ_SRCS:fuzz/%.c=build-fuzz/%)

.PHONY: all unit fuzz clean test check-docs
all: $(BUILD)/moatd $(BUILD)/moatctl

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libmoat.a: $(LIB_OBJS)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/moatd: $(BUILD)/obj/moatd.o $(BUILD)/libmoat.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/moatctl: $(BUILD)/obj/moatctl.o $(BUILD)/libmoat.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test_%: tests/unit/test_%.c $(BUILD)/libmoat.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

unit: $(UNITS)
	@set -e; for t in $(UNITS); do echo "== $$t"; $$t; done

# libFuzzer harnesses: clang, ASan+UBSan, linked with every library source.
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -Isrc \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	$(shell pkg-config --cflags $(PKGS))
build-fuzz/%: fuzz/%.c $(LIB_SRCS) $(wildcard src/*.h)
	@mkdir -p build-fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< $(LIB_SRCS) $(LDLIBS)
fuzz: $(FUZZERS)

check-docs: $(BUILD)/moatd
	$(BUILD)/moatd --dump-config-doc | diff -u - docs/configuration.md

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJS:.o=.d) $(BUILD)/obj/moatd.d $(BUILD)/obj/moatctl.d

# Benchmarks against Postfix (see bench/README.md); need root and postfix.
.PHONY: bench bench-dr
# moatd is built first when it can be; without it bench/run says so and
# measures Postfix alone.
bench:
	-$(MAKE) $(BUILD)/moatd
	bench/run $(BENCH_ARGS)
bench-dr:
	-$(MAKE) $(BUILD)/moatd
	bench/dr $(BENCH_ARGS)
