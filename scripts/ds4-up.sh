#!/usr/bin/env bash
# ds4-up.sh - launch and operate the ds4 pipeline: kvd, engined, tokenizerd
# and gatewayd, one run directory per stack instance.
#
#   scripts/ds4-up.sh [start] [options]     install/build what is missing, start
#                                           every stage, print the endpoint
#   scripts/ds4-up.sh stop                  stop every stage (reverse order)
#   scripts/ds4-up.sh status                each stage's pid and state, live counters
#   scripts/ds4-up.sh restart DAEMON [opt]  restart one stage (others keep serving)
#   scripts/ds4-up.sh pid DAEMON            print the stage's pid
#   scripts/ds4-up.sh logs [DAEMON] [-f]    show (or follow) a stage's log
#   scripts/ds4-up.sh kv-dir DIR            move kvd's storage while serving
#
# Run `scripts/ds4-up.sh --help` for the options. docs/OPERATIONS.md explains
# every operation. The script is idempotent: a second `start` reports the
# running stack; after a crash or a `kill -9` of any stage, `start` brings
# the missing stages back (the daemons clear stale sockets, pidfiles and
# shared-memory segments themselves).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ALL_DAEMONS="kvd engined tokenizerd gatewayd"   # start order; stop is reverse
MODEL_NAME=deepseek-v4-flash

# ---- output -----------------------------------------------------------------

if [ -t 1 ]; then B=$'\033[1m'; D=$'\033[2m'; R=$'\033[31m'; Y=$'\033[33m'; G=$'\033[32m'; N=$'\033[0m'
else B=; D=; R=; Y=; G=; N=; fi
say()  { printf '%s\n' "$*"; }
step() { printf '%s==>%s %s\n' "$B" "$N" "$*"; }
warn() { printf '%swarning:%s %s\n' "$Y" "$N" "$*" >&2; }
die()  { printf '%sds4-up: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

usage() {
  cat <<EOF
usage: scripts/ds4-up.sh [COMMAND] [OPTIONS]

Commands:
  start              (default) install and build what is missing, start kvd,
                     engined, tokenizerd and gatewayd, wait until each is ready
  stop               stop every stage (SIGTERM, bounded drain, then SIGKILL)
  status             pid and state of each stage, gateway health, counters;
                     exit 0 only if every stage runs and answers a PING
  restart DAEMON     stop and start one stage with the stack's settings (new
                     options given here replace the saved ones, e.g.
                     'restart kvd --kv-disk-dir /new/dir')
  pid DAEMON         print the pid of a running stage (exit 1 if not running)
  logs [DAEMON] [-f] last lines of a stage's log (all stages without DAEMON);
                     -f follows
  kv-dir DIR         switch kvd's KV storage directory while the stack serves
                     (no restart; DIR is created; later restarts keep it)
DAEMON is one of: $ALL_DAEMONS

Model and serving (the same flags as ds4-server):
  -m, --model FILE        DeepSeek V4 Flash GGUF (ds4's q2/q4 files work as they
                          are). Without it: a small generated test model whose
                          output is noise (see below)
  -c, --ctx N             context size per session (default: engined's, 32768)
      --kv-disk-dir DIR   on-disk KV cache (default \$DS4_CACHE_DIR/kv)
      --kv-disk-space-mb N  space budget of the KV cache (default: kvd's)
      --host ADDR         HTTP bind address (default 127.0.0.1)
      --port N            HTTP port (default 8000; 0: any free port, printed)
      --api-key KEY       require this key (Authorization: Bearer / x-api-key)
      --cors              send CORS headers (off by default)
      --backend NAME      engined compute backend: cl (OpenCL) or ref (plain C)
      --test-mode         allow test-only features (forced decoding)
      --log-level LEVEL   error|warn|info|debug|trace (default info)

Stack instance:
      --run-dir DIR       sockets, pidfiles, logs (default \$DS4_RUN_DIR, else
                          \$XDG_RUNTIME_DIR/ds4, else /tmp/ds4-\$UID)
      --instance NAME     names the shared-memory segments (default "default")
      --build DIR         where the binaries are (default build/, \$DS4_BUILD)
      --no-deps           do not run scripts/deps.sh
      --no-build          do not run make
      --start-timeout S   seconds to wait for a stage to become ready
                          (default 120; engined: 1800, loading a model is slow)
  -h, --help              this text

Environment: DS4_CACHE_DIR (default model and KV cache; default
\${XDG_CACHE_HOME:-~/.cache}/ds4), DS4_<DAEMON>_ARGS (extra arguments for
one stage, e.g. DS4_ENGINED_ARGS="--drain-ms 2000").
EOF
}

# ---- settings ---------------------------------------------------------------

CMD=start; TARGET=""; FOLLOW=0; NEW_KV_DIR=""
# Settings saved in the run directory (restart and recovery reuse them).
SAVED_VARS="INSTANCE MODEL CTX KV_DIR KV_MB HOST PORT API_KEY CORS BACKEND TEST_MODE LOG_LEVEL BUILD_DIR"
MODEL=""; CTX=""; KV_DIR=""; KV_MB=""; HOST=""; PORT=""; API_KEY=""; CORS=""
BACKEND=""; TEST_MODE=""; LOG_LEVEL=""; BUILD_DIR=""
RUN_DIR=""; INSTANCE=""; NO_DEPS=0; NO_BUILD=0; START_TIMEOUT=""
SET_VARS=" "   # settings given on this command line

set_opt() { printf -v "$1" '%s' "$2"; SET_VARS="$SET_VARS$1 "; }
given()   { case "$SET_VARS" in *" $1 "*) return 0;; esac; return 1; }

parse_args() {
  local a v
  while [ $# -gt 0 ]; do
    a=$1; v=""
    case "$a" in
      --*=*) v=${a#*=}; a=${a%%=*}; shift; set -- "$a" "$v" "$@" ;;
    esac
    case "$a" in
      start|stop|status) CMD=$a ;;
      restart|pid) CMD=$a; [ $# -ge 2 ] || die "$a needs a daemon name ($ALL_DAEMONS)"
                   TARGET=$2; shift ;;
      logs) CMD=logs
            if [ $# -ge 2 ] && [ "${2#-}" = "$2" ]; then TARGET=$2; shift; fi ;;
      kv-dir) CMD=kv-dir; [ $# -ge 2 ] || die "kv-dir needs a directory"
              NEW_KV_DIR=$2; shift ;;
      -f|--follow) FOLLOW=1 ;;
      -h|--help) usage; exit 0 ;;
      -m|--model|-c|--ctx|--kv-disk-dir|--kv-disk-space-mb|--host|--port|--api-key|\
      --backend|--log-level|--run-dir|--instance|--build|--start-timeout)
        [ $# -ge 2 ] || die "$a needs a value"
        case "$a" in
          -m|--model) set_opt MODEL "$2" ;;
          -c|--ctx) set_opt CTX "$2" ;;
          --kv-disk-dir) set_opt KV_DIR "$2" ;;
          --kv-disk-space-mb) set_opt KV_MB "$2" ;;
          --host) set_opt HOST "$2" ;;
          --port) set_opt PORT "$2" ;;
          --api-key) set_opt API_KEY "$2" ;;
          --backend) set_opt BACKEND "$2" ;;
          --log-level) set_opt LOG_LEVEL "$2" ;;
          --run-dir) RUN_DIR=$2 ;;
          --instance) set_opt INSTANCE "$2" ;;
          --build) set_opt BUILD_DIR "$2" ;;
          --start-timeout) START_TIMEOUT=$2 ;;
        esac
        shift ;;
      --cors) set_opt CORS 1 ;;
      --test-mode) set_opt TEST_MODE 1 ;;
      --no-deps) NO_DEPS=1 ;;
      --no-build) NO_BUILD=1 ;;
      *) die "unknown argument '$a' (see --help)" ;;
    esac
    shift
  done
  if [ -n "$TARGET" ]; then
    case " $ALL_DAEMONS " in *" $TARGET "*) ;; *) die "unknown daemon '$TARGET' (one of: $ALL_DAEMONS)" ;; esac
  fi
  number_opt CTX; number_opt KV_MB; number_opt PORT
  [ -z "$START_TIMEOUT" ] || [[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || die "--start-timeout must be a number"
  return 0
}

number_opt() {
  local v=${!1}
  [ -z "$v" ] || [[ "$v" =~ ^[0-9]+$ ]] || die "$(echo "$1" | tr 'A-Z_' 'a-z-' | sed 's/kv-mb/kv-disk-space-mb/') must be a number, not '$v'"
}

# The run directory, exactly as the daemons resolve it (common/daemon.c).
resolve_paths() {
  if [ -z "$RUN_DIR" ]; then
    if [ -n "${DS4_RUN_DIR:-}" ]; then RUN_DIR=$DS4_RUN_DIR
    elif [ -n "${XDG_RUNTIME_DIR:-}" ]; then RUN_DIR=$XDG_RUNTIME_DIR/ds4
    else RUN_DIR=/tmp/ds4-$(id -u); fi
  fi
  CACHE_DIR=${DS4_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ds4}
  # the daemons resolve paths from their own working directory, and later
  # commands may run from another one: keep every path absolute
  RUN_DIR=$(realpath -m -- "$RUN_DIR"); CACHE_DIR=$(realpath -m -- "$CACHE_DIR")
  CONF=$RUN_DIR/stack.conf
  DEFAULT_MODEL=$CACHE_DIR/ds4-test-model-seed1-q2.gguf
}

# Fill unset settings with defaults.
apply_defaults() {
  INSTANCE=${INSTANCE:-${DS4_INSTANCE:-default}}
  BUILD_DIR=${BUILD_DIR:-${DS4_BUILD:-build}}
  KV_DIR=$(realpath -m -- "${KV_DIR:-$CACHE_DIR/kv}")
  HOST=${HOST:-127.0.0.1}
  PORT=${PORT:-8000}
  LOG_LEVEL=${LOG_LEVEL:-info}
  case "$BUILD_DIR" in /*) BIN=$BUILD_DIR ;; *) BIN=$ROOT/$BUILD_DIR ;; esac
}

# Save the settings of this stack (0600; the file may hold the API key).
save_conf() {
  local v
  mkdir -p -m 700 "$RUN_DIR" || die "cannot create the run directory $RUN_DIR"
  ( umask 077
    { echo "# ds4-up.sh settings of this stack instance (used by restart/recovery)"
      for v in $SAVED_VARS; do printf '%s=%q\n' "SAVED_$v" "${!v}"; done
    } > "$CONF.tmp" && mv -f "$CONF.tmp" "$CONF" ) || die "cannot write $CONF"
}

# Load saved settings; the ones given on this command line win.
load_conf() {
  [ -f "$CONF" ] || return 1
  local v s
  # shellcheck disable=SC1090
  . "$CONF" || return 1
  for v in $SAVED_VARS; do
    s=SAVED_$v
    given "$v" || printf -v "$v" '%s' "${!s:-}"
  done
  return 0
}

# ---- stage state ------------------------------------------------------------

pidfile_of() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }
logfile_of() { printf '%s/%s.log' "$RUN_DIR" "$1"; }
built()      { [ -x "$BIN/$1" ]; }

# Pid of a running stage: its pidfile exists and is locked (the daemon holds
# an flock on it for its lifetime; a pidfile left by a killed daemon is not).
daemon_pid() {
  local pf pid
  pf=$(pidfile_of "$1")
  [ -f "$pf" ] || return 1
  if flock -n -s "$pf" true 2>/dev/null; then return 1; fi
  read -r pid < "$pf" 2>/dev/null || pid=""
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  echo "$pid"
}

running_daemons() {
  local d out=""
  for d in $ALL_DAEMONS; do daemon_pid "$d" >/dev/null && out="$out $d"; done
  echo "${out# }"
}

# Does the stage's binary accept --opt? (the daemons are still landing; an
# option a stage does not know yet is reported and left out.)
declare -A HELP_CACHE
has_opt() {
  local d=$1 opt=$2
  if [ -z "${HELP_CACHE[$d]+x}" ]; then
    HELP_CACHE[$d]=$("$BIN/$d" --help 2>&1 | head -c 65536)
  fi
  case "${HELP_CACHE[$d]}" in *"--$opt "*|*"--$opt="*|*"--$opt"$'\n'*|*"--$opt,"*) return 0 ;; esac
  return 1
}

# Append "--opt value" (or just "--opt" when value is "FLAG") to ARGS if the
# stage knows the option; note it otherwise.
add_arg() {
  local d=$1 opt=$2 val=$3
  if has_opt "$d" "$opt"; then
    if [ "$val" = FLAG ]; then ARGS+=("--$opt"); else ARGS+=("--$opt" "$val"); fi
  else
    warn "$d does not take --$opt yet; not passed"
  fi
}

# The command line of one stage, from the stack's settings, into ARGS.
build_args() {
  local d=$1 extra var
  ARGS=(--run-dir "$RUN_DIR" --instance "$INSTANCE" --log-level "$LOG_LEVEL")
  case "$d" in
    kvd)
      add_arg kvd kv-disk-dir "$KV_DIR"
      [ -z "$KV_MB" ] || add_arg kvd kv-disk-space-mb "$KV_MB" ;;
    engined)
      add_arg engined model "$MODEL"
      [ -z "$CTX" ] || add_arg engined ctx "$CTX"
      [ -z "$BACKEND" ] || add_arg engined backend "$BACKEND" ;;
    tokenizerd)
      add_arg tokenizerd model "$MODEL" ;;
    gatewayd)
      add_arg gatewayd model "$MODEL"   # its vocabulary: loaded before READY
      add_arg gatewayd host "$HOST"
      add_arg gatewayd port "$PORT"
      [ -z "$API_KEY" ] || add_arg gatewayd api-key "$API_KEY"
      [ -z "$CORS" ] || add_arg gatewayd cors FLAG
      [ -z "$CTX" ] || ! has_opt gatewayd ctx || ARGS+=(--ctx "$CTX") ;;
  esac
  [ -z "$TEST_MODE" ] || add_arg "$d" test-mode FLAG
  var=DS4_$(echo "$d" | tr a-z A-Z)_ARGS
  extra=${!var:-}
  # shellcheck disable=SC2206
  [ -z "$extra" ] || ARGS+=($extra)
}

# The last lines a stage logged since it was last started by this script.
log_tail() {
  awk '/^--- [0-9][0-9][0-9][0-9]-/ { n = 0 } { l[n++] = $0 }
       END { for (i = (n > 15 ? n - 15 : 0); i < n; i++) print "        " l[i] }' "$1"
}

# Start one stage and wait for its READY handshake: a daemon started without
# --foreground detaches, and the launching process exits 0 only once the
# daemon has signalled READY (1 if it failed first). Progress is shown while
# waiting; past the deadline the stage is killed and reported.
start_daemon() {
  local d=$1 pid log launcher t0 now limit last shown=0 rc
  if ! built "$d"; then
    say "  ${Y}skip${N}  $d: $BIN/$d does not exist (not built, or not in this tree yet)"
    return 0
  fi
  if pid=$(daemon_pid "$d"); then
    say "  ${G}ok${N}    $d already running (pid $pid)"
    return 0
  fi
  build_args "$d"
  log=$(logfile_of "$d")
  printf '%s start %s %s\n' "--- $(date '+%F %T')" "$d" "${ARGS[*]}" \
    | sed 's/--api-key [^ ]*/--api-key ***/' >> "$log"
  # the daemon must not inherit our lock (or it would hold it forever)
  ( if [ -n "${LOCK_FD:-}" ]; then exec {LOCK_FD}>&-; fi
    if [ -n "${NAP_FD:-}" ]; then exec {NAP_FD}<&-; fi
    exec "$BIN/$d" "${ARGS[@]}" </dev/null >>"$log" 2>&1 ) &
  launcher=$!
  t0=$SECONDS; limit=${START_TIMEOUT:-120}; local us0=${EPOCHREALTIME/./}
  [ -n "$START_TIMEOUT" ] || [ "$d" != engined ] || limit=1800
  while kill -0 "$launcher" 2>/dev/null; do
    now=$SECONDS
    if [ $((now - t0)) -ge "$limit" ]; then
      say "  ${R}FAIL${N}  $d not ready after ${limit}s; stopping it. Last log lines ($log):"
      pid=$(daemon_pid "$d") && kill -KILL "$pid" 2>/dev/null
      kill -KILL "$launcher" 2>/dev/null; wait "$launcher" 2>/dev/null
      log_tail "$log"
      return 1
    fi
    if [ $((now - t0)) -ge 3 ] && [ $(((now - t0) % 5)) -eq 0 ] && [ "$shown" != "$now" ]; then
      shown=$now
      last=$(tail -n 1 "$log" 2>/dev/null | cut -c1-100)
      say "        $d: waiting for READY ($((now - t0))s) ${D}${last}${N}"
    fi
    nap
  done
  wait "$launcher"; rc=$?
  if [ $rc -ne 0 ] && pid=$(daemon_pid "$d"); then
    say "  ${G}ok${N}    $d already running (pid $pid, started by another ds4-up.sh)"
    return 0
  fi
  if [ $rc -ne 0 ] || ! pid=$(daemon_pid "$d"); then
    say "  ${R}FAIL${N}  $d did not start (exit $rc). Its log ($log) says:"
    log_tail "$log"
    return 1
  fi
  local ms=$(( (${EPOCHREALTIME/./} - us0) / 1000 ))
  say "  ${G}ok${N}    $d ready (pid $pid, $((ms / 1000)).$(printf %03d $((ms % 1000)))s)"
}

# A process that exists and is not a zombie (a stage killed or stopped is
# reparented to init, which may take a while to reap it).
alive() {
  local st
  kill -0 "$1" 2>/dev/null || return 1
  read -r st < "/proc/$1/stat" 2>/dev/null || return 1
  st=${st##*) }
  [ "${st:0:1}" != Z ]
}

# Sleep 50 ms without starting a process (the polling loops run often).
nap() {
  [ -n "${NAP_FD:-}" ] || exec {NAP_FD}<> <(:)
  read -r -t 0.05 -u "$NAP_FD" _ 2>/dev/null || true
}

# SIGTERM, wait for the drain (bounded), then SIGKILL.
stop_daemon() {
  local d=$1 pid t0 grace=${DS4_STOP_TIMEOUT:-30}
  pid=$(daemon_pid "$d") || return 0
  kill -TERM "$pid" 2>/dev/null
  kill -CONT "$pid" 2>/dev/null   # a stopped (SIGSTOP) stage must see the TERM
  t0=$SECONDS
  while alive "$pid"; do
    if [ $((SECONDS - t0)) -ge "$grace" ]; then
      warn "$d (pid $pid) still running ${grace}s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
      while alive "$pid"; do nap; done
      break
    fi
    nap
  done
  say "  stopped $d (pid $pid)"
}

# The HTTP port the gateway listens on (--port 0: the one it picked).
gw_port() {
  local p=$PORT
  if [ "$p" = 0 ] && [ -r "$RUN_DIR/gatewayd.port" ]; then read -r p < "$RUN_DIR/gatewayd.port"; fi
  echo "$p"
}

# GET /health on the gateway (bash's /dev/tcp, no curl needed): 0 on 200.
gw_healthy() {
  local host=$HOST port fd line
  case "$host" in 0.0.0.0|::|"[::]"|"") host=127.0.0.1 ;; esac
  port=$(gw_port)
  exec {fd}<>"/dev/tcp/$host/$port" 2>/dev/null || return 1
  printf 'GET /health HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$host" "$port" >&"$fd"
  read -r -t 5 line <&"$fd"
  exec {fd}>&-
  case "$line" in "HTTP/1."?" 200"*) return 0 ;; esac
  return 1
}

# After stages (re)started: the gateway answers /health with 200 once it
# reaches tokenizerd and engined (their sockets reconnect by themselves).
wait_healthy() {
  local t0=$SECONDS limit=${START_TIMEOUT:-60}
  daemon_pid gatewayd >/dev/null || return 0
  built engined && built tokenizerd || return 0
  until gw_healthy; do
    if [ $((SECONDS - t0)) -ge "$limit" ]; then
      say "  ${R}FAIL${N}  the gateway does not report every stage ready after ${limit}s (GET /health)"
      return 1
    fi
    nap; nap
  done
  say "  ${G}ok${N}    gateway serving: GET /health 200"
}

# ---- install, build, default model ------------------------------------------

install_and_build() {
  if [ "$NO_DEPS" = 0 ]; then
    step "checking dependencies (scripts/deps.sh; the first time this installs packages)"
    DS4_DEPS_VERBOSE=1 sh "$ROOT/scripts/deps.sh" || die "installing dependencies failed (run scripts/deps.sh as root)"
  fi
  [ "$NO_BUILD" = 1 ] && return 0
  local targets="" d jobs log rc
  for d in $ALL_DAEMONS; do [ -f "$ROOT/$d/$d.c" ] && targets="$targets $BUILD_DIR/$d"; done
  for d in ds4 ds4-gguf ds4stat; do [ -f "$ROOT/tools/$d.c" ] && targets="$targets $BUILD_DIR/$d"; done
  jobs=$(nproc 2>/dev/null || echo 2)
  mkdir -p "$BIN" || die "cannot create $BIN"
  log=$BIN/ds4-up-make.log
  step "building (make -j$jobs BUILD=$BUILD_DIR; full output in $log)"
  ( cd "$ROOT" && make -j"$jobs" BUILD="$BUILD_DIR" $targets ) > "$log" 2>&1 &
  local mk=$! n=0 seen=0
  while kill -0 "$mk" 2>/dev/null; do
    n=$(grep -c -- ' -c ' "$log" 2>/dev/null)
    if [ "$n" != "$seen" ]; then
      grep -- ' -c ' "$log" | sed -n "$((seen + 1)),${n}p" | sed 's/.* -c \([^ ]*\) .*/  cc \1/'
      seen=$n
    fi
    sleep 0.5
  done
  wait "$mk"; rc=$?
  grep -- ' -c ' "$log" | sed -n "$((seen + 1)),\$p" | sed 's/.* -c \([^ ]*\) .*/  cc \1/'
  if [ $rc -ne 0 ]; then
    tail -n 25 "$log" >&2
    die "the build failed (full output: $log)"
  fi
  say "  build up to date"
}

# The default model: a small generated DeepSeek V4 model with the real
# layout and tokenizer, made once into the cache directory.
default_model() {
  [ -s "$DEFAULT_MODEL" ] && return 0
  local tok=$ROOT/node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json
  [ -x "$BIN/ds4-gguf" ] || die "$BIN/ds4-gguf is missing: build first (make) or give -m MODEL"
  [ -f "$tok" ] || die "the DeepSeek V4 tokenizer is missing ($tok): run scripts/deps.sh"
  mkdir -p "$CACHE_DIR" || die "cannot create $CACHE_DIR"
  step "generating the default test model (once) into $DEFAULT_MODEL"
  local tmp=$DEFAULT_MODEL.tmp.$$
  if ! "$BIN/ds4-gguf" mkmodel --out "$tmp" --seed 1 --layout q2 --tokenizer "$tok" 2>&1 \
       | sed 's/^/  /'; then
    rm -f "$tmp"; die "generating the default model failed"
  fi
  [ -s "$tmp" ] || { rm -f "$tmp"; die "generating the default model failed"; }
  mv -f "$tmp" "$DEFAULT_MODEL"
}

# ---- commands ---------------------------------------------------------------

print_banner() {
  local port; port=$(gw_port)
  local url="http://$HOST:$port" hosturl key_hdr="" key=${API_KEY:-none}
  hosturl=$url
  case "$HOST" in 0.0.0.0|::|"[::]") hosturl="http://127.0.0.1:$port" ;; esac
  [ -z "$API_KEY" ] || key_hdr=" -H 'Authorization: Bearer $API_KEY'"
  say ""
  say "${B}ds4 stack is up${N}   run dir $RUN_DIR, instance $INSTANCE"
  if built gatewayd; then
    say "  endpoint  ${B}$url${N}  (OpenAI: $url/v1, Anthropic: $url/v1/messages)"
  else
    say "  endpoint  none yet: gatewayd is not built in this tree"
  fi
  say "  model     $MODEL"
  if [ "$MODEL" = "${DEFAULT_MODEL:-}" ]; then
    say "  ${Y}This is the built-in TEST model: random weights with the real DeepSeek V4"
    say "  layout and tokenizer. Its output is noise.${N} To serve the real model, download"
    say "  a ds4 GGUF (e.g. DeepSeek-V4-Flash-q2.gguf, ~81 GB) and run:"
    say "      scripts/ds4-up.sh stop && scripts/ds4-up.sh -m /path/to/DeepSeek-V4-Flash-q2.gguf"
  fi
  say ""
  say "Try it:"
  say "  curl -s $hosturl/v1/chat/completions -H 'Content-Type: application/json'$key_hdr \\"
  say "    -d '{\"model\":\"$MODEL_NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":64}'"
  say "  $BUILD_DIR/ds4 --port $port${API_KEY:+ --api-key $API_KEY} \"Hello\"       # CLI; without a prompt: interactive chat"
  say ""
  say "Point an agent at it:"
  say "  Claude Code:  ANTHROPIC_BASE_URL=$hosturl ANTHROPIC_API_KEY=$key ANTHROPIC_MODEL=$MODEL_NAME claude"
  say "  Codex CLI:    in ~/.codex/config.toml:"
  say "                  model = \"$MODEL_NAME\""
  say "                  model_provider = \"ds4\""
  say "                  [model_providers.ds4]"
  say "                  name = \"ds4\""
  say "                  base_url = \"$hosturl/v1\""
  say "                  env_key = \"DS4_API_KEY\""
  say "                  wire_api = \"responses\""
  say "                then: DS4_API_KEY=$key codex"
  say "  opencode:     in opencode.json:"
  say "                  {\"provider\":{\"ds4\":{\"npm\":\"@ai-sdk/openai-compatible\",\"name\":\"ds4\","
  say "                   \"options\":{\"baseURL\":\"$hosturl/v1\",\"apiKey\":\"$key\"},"
  say "                   \"models\":{\"$MODEL_NAME\":{\"name\":\"DeepSeek V4 Flash\"}}}},"
  say "                   \"model\":\"ds4/$MODEL_NAME\"}"
  say ""
  say "Operate: scripts/ds4-up.sh status | stop | restart DAEMON | logs DAEMON [-f]   (docs/OPERATIONS.md)"
}

cmd_start() {
  local running d failed=0 recovered=""
  running=$(running_daemons)
  if load_conf; then
    if [ -n "$running" ]; then
      for v in MODEL CTX BACKEND; do
        local s=SAVED_$v
        if given "$v" && [ "${!v}" != "${!s:-}" ]; then
          warn "the running stack has $(echo "$v" | tr A-Z a-z) '${!s:-}'; '${!v}' applies only to stages started now (restart a stage to change it)"
        fi
      done
    else
      recovered=1
    fi
  fi
  apply_defaults
  if [ -n "$running" ]; then
    local missing=""
    for d in $ALL_DAEMONS; do
      built "$d" && ! daemon_pid "$d" >/dev/null && missing="$missing $d"
    done
    if [ -z "$missing" ]; then
      say "ds4 stack already running in $RUN_DIR (instance $INSTANCE):"
      for d in $running; do say "  $d pid $(daemon_pid "$d")"; done
      say "Use 'scripts/ds4-up.sh status', 'stop' or 'restart DAEMON'."
      return 0
    fi
    step "recovering: running:$(printf ' %s' $running); starting:$missing"
  elif [ -n "$recovered" ]; then
    step "restarting the stack that last ran in $RUN_DIR (settings from $CONF)"
  fi
  install_and_build
  apply_defaults
  if [ -z "$MODEL" ]; then
    default_model
    MODEL=$DEFAULT_MODEL
  fi
  [ -r "$MODEL" ] || die "model file $MODEL not found or not readable"
  MODEL=$(realpath -- "$MODEL")
  mkdir -p -m 700 "$RUN_DIR" || die "cannot create the run directory $RUN_DIR"
  mkdir -p "$KV_DIR" 2>/dev/null || warn "cannot create the KV directory $KV_DIR"
  save_conf
  step "starting the stack in $RUN_DIR (instance $INSTANCE)"
  for d in $ALL_DAEMONS; do
    start_daemon "$d" || { failed=1; break; }
  done
  [ $failed = 1 ] || wait_healthy || failed=1
  if [ $failed = 1 ]; then
    say "The stack is incomplete; the stages that started keep running."
    say "Fix the cause, then run scripts/ds4-up.sh start again (or stop)."
    return 1
  fi
  print_banner
}

cmd_stop() {
  local d any=0 rev=""
  for d in $ALL_DAEMONS; do rev="$d $rev"; done
  for d in $rev; do
    if daemon_pid "$d" >/dev/null; then any=1; stop_daemon "$d"; fi
  done
  rm -f "$CONF"
  [ $any = 1 ] && say "ds4 stack stopped ($RUN_DIR)" || say "ds4 stack not running ($RUN_DIR)"
}

cmd_status() {
  local d pid all=0 down=0
  load_conf || true
  apply_defaults
  say "ds4 stack in $RUN_DIR (instance $INSTANCE)"
  for d in $ALL_DAEMONS; do
    if pid=$(daemon_pid "$d"); then
      say "  $(printf '%-11s' "$d") ${G}running${N}  pid $pid"
      all=$((all + 1))
    elif built "$d"; then
      say "  $(printf '%-11s' "$d") ${R}stopped${N}"
      down=$((down + 1))
    else
      say "  $(printf '%-11s' "$d") ${D}not built${N}"
    fi
  done
  local answered=0
  if [ $all -gt 0 ] && [ -x "$BIN/ds4" ]; then
    say ""
    local h=$HOST
    case "$h" in 0.0.0.0|::|"[::]") h=127.0.0.1 ;; esac
    "$BIN/ds4" status --run-dir "$RUN_DIR" --instance "$INSTANCE" --port "$(gw_port)" --host "$h" \
      || answered=1
  fi
  # 0 only when every built stage runs and answers (a hung stage is not fine)
  [ $all -gt 0 ] && [ $down -eq 0 ] && [ $answered -eq 0 ]
}

cmd_restart() {
  local d=$TARGET old_model=""
  load_conf && old_model=${SAVED_MODEL:-}
  apply_defaults
  built "$d" || die "$BIN/$d does not exist (not built)"
  if [ -z "$MODEL" ]; then default_model; MODEL=$DEFAULT_MODEL; fi
  if [ -n "$old_model" ] && [ "$MODEL" != "$old_model" ]; then
    local o others=""
    for o in engined tokenizerd gatewayd; do
      [ "$o" != "$d" ] && daemon_pid "$o" >/dev/null && others="$others $o"
    done
    [ -z "$others" ] || warn "the model changes; restart$others too (they still use $old_model)"
  fi
  save_conf
  step "restarting $d"
  stop_daemon "$d"
  start_daemon "$d" && wait_healthy
}

cmd_kv_dir() {
  local dir=$NEW_KV_DIR
  load_conf || true
  apply_defaults
  daemon_pid kvd >/dev/null || die "kvd is not running ($RUN_DIR); to change the directory of a stopped stack: start --kv-disk-dir DIR"
  [ -x "$BIN/ds4" ] || die "$BIN/ds4 is not built"
  mkdir -p "$dir" || die "cannot create $dir"
  dir=$(cd "$dir" && pwd)
  "$BIN/ds4" kv-dir "$dir" --run-dir "$RUN_DIR" --instance "$INSTANCE" || return 1
  KV_DIR=$dir
  save_conf
}

cmd_pid() {
  daemon_pid "$TARGET" || { echo "$TARGET is not running ($RUN_DIR)" >&2; return 1; }
}

cmd_logs() {
  local d files=()
  if [ -n "$TARGET" ]; then files=("$(logfile_of "$TARGET")")
  else for d in $ALL_DAEMONS; do [ -f "$(logfile_of "$d")" ] && files+=("$(logfile_of "$d")"); done; fi
  [ ${#files[@]} -gt 0 ] && [ -f "${files[0]}" ] || die "no log in $RUN_DIR${TARGET:+ for $TARGET}"
  if [ $FOLLOW = 1 ]; then exec tail -n 50 -F "${files[@]}"; fi
  tail -n 50 "${files[@]}"
}

# One ds4-up.sh at a time changes a stack instance (two concurrent starts
# would race to start the same stages).
lock_stack() {
  mkdir -p -m 700 "$RUN_DIR" 2>/dev/null || die "cannot create the run directory $RUN_DIR"
  exec {LOCK_FD}>>"$RUN_DIR/ds4-up.lock" || die "cannot open $RUN_DIR/ds4-up.lock"
  if ! flock -n "$LOCK_FD"; then
    say "another ds4-up.sh is working on $RUN_DIR; waiting for it"
    flock "$LOCK_FD" || die "cannot lock $RUN_DIR/ds4-up.lock"
  fi
}

parse_args "$@"
resolve_paths
case "$CMD" in start|stop|restart|kv-dir) lock_stack ;; esac
case "$CMD" in
  start) cmd_start ;;
  stop) apply_defaults; cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_restart ;;
  pid) apply_defaults; cmd_pid ;;
  logs) cmd_logs ;;
  kv-dir) cmd_kv_dir ;;
esac
