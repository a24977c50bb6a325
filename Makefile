# ds4 pipeline - plain GNU make.
#   make            build daemons, tools and tests (release: -O2 -g)
#   make test       build, then run every unit test
#   make asan       the same tests under AddressSanitizer + UBSan (build-asan/)
#   make fuzz       libFuzzer targets with clang (build-fuzz/), see tests/fuzz/
#   make fuzz-run   run each fuzz target for FUZZ_SECONDS on its corpus
# Sources are found by convention, so adding a file needs no edit here:
#   common/*.c                       -> libcommon.a
#   <daemon>/*.c except <daemon>.c   -> lib<daemon>.a  (tested directly)
#   <daemon>/<daemon>.c              -> the daemon binary
#   tools/<name>.c                   -> a tool binary
#   tests/unit/test_<name>.c         -> a unit test binary
#   tests/fuzz/fuzz_<name>.c         -> a fuzz target (+ a corpus replayer)
#   kernels/*.cl                     -> embedded into libengined.a

CC      ?= cc
BUILD   ?= build
SANITIZE ?= 0
OPT     ?= -O2
CFLAGS_BASE := -std=gnu11 -g -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
               -Wno-missing-field-initializers -fno-strict-aliasing -ffp-contract=off \
               -D_GNU_SOURCE -DCL_TARGET_OPENCL_VERSION=300 -I. -Icommon
ifeq ($(SANITIZE),1)
  OPT := -O1
  CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
endif
CFLAGS  ?=
CFLAGS  += $(CFLAGS_BASE) $(OPT)
LDLIBS  := -lzmq -ljansson -luuid -lpcre2-8 -lmicrohttpd -lOpenCL -lcrypto -lpthread -lm -lrt

DAEMONS := tokenizerd engined kvd gatewayd

COMMON_SRC := $(wildcard common/*.c)
OBJ     := $(BUILD)/obj
COMMON_OBJ := $(COMMON_SRC:%.c=$(OBJ)/%.o)

define daemon_lib
$(1)_LIBSRC := $$(filter-out $(1)/$(1).c,$$(wildcard $(1)/*.c))
$(1)_LIBOBJ := $$($(1)_LIBSRC:%.c=$$(OBJ)/%.o)
endef
$(foreach d,$(DAEMONS),$(eval $(call daemon_lib,$(d))))

KERNEL_SRC := $(wildcard kernels/*.cl)
KERNEL_GEN := $(BUILD)/gen/kernels_embed.c
KERNEL_OBJ := $(OBJ)/gen/kernels_embed.o

# Libraries in link order (dependents first).
LIBS := $(BUILD)/libgatewayd.a $(BUILD)/libengined.a $(BUILD)/libkvd.a \
        $(BUILD)/libtokenizerd.a $(BUILD)/libcommon.a

DAEMON_BINS := $(foreach d,$(DAEMONS),$(if $(wildcard $(d)/$(d).c),$(BUILD)/$(d)))
TOOL_BINS   := $(patsubst tools/%.c,$(BUILD)/%,$(wildcard tools/*.c))
TEST_BINS   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)
REPLAY_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/replay_%,$(FUZZ_SRC))

.PHONY: all test asan fuzz fuzz-run clean
# Keep objects of pattern-chained targets (tests, tools) between runs.
.SECONDARY:
all: $(DAEMON_BINS) $(TOOL_BINS) $(TEST_BINS) $(REPLAY_BINS)

$(OBJ)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(KERNEL_GEN): $(KERNEL_SRC) scripts/embed-kernels.sh
	@mkdir -p $(dir $@)
	sh scripts/embed-kernels.sh $(KERNEL_SRC) > $@.tmp && mv $@.tmp $@
$(KERNEL_OBJ): $(KERNEL_GEN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libcommon.a: $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/libengined.a: $(engined_LIBOBJ) $(KERNEL_OBJ)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/libtokenizerd.a: $(tokenizerd_LIBOBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/libkvd.a: $(kvd_LIBOBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/libgatewayd.a: $(gatewayd_LIBOBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(foreach d,$(DAEMONS),$(eval $(BUILD)/$(d): $(OBJ)/$(d)/$(d).o $(LIBS) ; $$(CC) $$(LDFLAGS) $$< $(LIBS) $$(LDLIBS) -o $$@))

$(BUILD)/%: $(OBJ)/tools/%.o $(LIBS)
	$(CC) $(LDFLAGS) $< $(LIBS) $(LDLIBS) -o $@

$(BUILD)/tests/%: $(OBJ)/tests/unit/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIBS) $(LDLIBS) -o $@

# Corpus replayer: the fuzz target plus a main() that feeds it every file
# given on the command line (runs under gcc + ASan without libFuzzer).
$(BUILD)/fuzz/replay_%: $(OBJ)/tests/fuzz/%.o $(OBJ)/tests/fuzz/replay_main.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(filter %.o,$^) $(LIBS) $(LDLIBS) -o $@

test: all
	@sh scripts/run-unit-tests.sh $(BUILD)

asan:
	$(MAKE) BUILD=build-asan SANITIZE=1 test

# libFuzzer builds (clang), one binary per target. The library sources are
# compiled once (with coverage instrumentation) into one archive that every
# target links, instead of once per target.
FUZZ_BUILD ?= build-fuzz
FUZZ_CFLAGS := -std=gnu11 -g -O1 -D_GNU_SOURCE -DCL_TARGET_OPENCL_VERSION=300 -I. -Icommon \
               -fsanitize=address,undefined
FUZZ_LIBSRC := $(COMMON_SRC) $(tokenizerd_LIBSRC) $(kvd_LIBSRC) $(gatewayd_LIBSRC) $(engined_LIBSRC)
FUZZ_OBJS   := $(FUZZ_LIBSRC:%.c=$(FUZZ_BUILD)/obj/%.o) $(FUZZ_BUILD)/obj/gen/kernels_embed.o
FUZZ_BINS   := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(FUZZ_SRC))
$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@
$(FUZZ_BUILD)/obj/gen/kernels_embed.o: $(KERNEL_GEN)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -c $< -o $@
$(FUZZ_BUILD)/libfuzzdeps.a: $(FUZZ_OBJS)
	rm -f $@ && ar rcs $@ $^
$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/libfuzzdeps.a
	@echo "clang fuzz $*"
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_BUILD)/libfuzzdeps.a $(LDLIBS) -o $@
fuzz: $(FUZZ_BINS)

FUZZ_SECONDS ?= 30
fuzz-run: fuzz
	@for t in $(FUZZ_SRC); do n=$$(basename $$t .c); c=tests/fuzz/corpus/$${n#fuzz_}; \
	  mkdir -p tests/fuzz/corpus-out/$$n; \
	  echo "fuzz $$n for $(FUZZ_SECONDS)s (seed corpus $$c)"; \
	  if ! $(FUZZ_BUILD)/$$n -max_total_time=$(FUZZ_SECONDS) -seed=1 -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 tests/fuzz/corpus-out/$$n $$c > $(FUZZ_BUILD)/$$n.log 2>&1; then \
	    tail -40 $(FUZZ_BUILD)/$$n.log; echo "fuzz $$n FAILED (crash input saved in the current directory)"; exit 1; fi; \
	  grep -E 'exec_per_sec|new_units|peak_rss' $(FUZZ_BUILD)/$$n.log; done

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
