#!/usr/bin/env bash
# Selftest of the viewer page, the classic servers and check-viewer.mjs,
# without roomcam's daemon: two viewer pages meet in a room of a classic
# socket.io 2.5 and 4.8 server (tests/classic/server.js). One page plays
# the device (?camera=1: sends Chromium's fake camera and mic, always on).
#
#   tests/browser/selftest.sh [--out DIR] [--no-netns]
#   SELFTEST_ANY_CODEC=1 tests/browser/selftest.sh   (a Chromium without an H.264 encoder)
#
# Per server version (2 and 4):
#   device-offers  camera page first (offerer), viewer second (answerer):
#                  video (H.264) + audio, push-to-talk heard by the camera
#                  page, leave/join gives video again on a new peer connection;
#                  the viewer must have used Engine.IO 3 (sio 2) / 4 (sio 4)
#   viewer-offers  viewer first (offerer), camera page second (answerer):
#                  video (H.264) + audio
#   full           a third page in that room is told `full`
#
# Runs inside a new network namespace with only loopback (unshare -n, needs
# root), as the CI does; --no-netns runs on the host's loopback instead.
# Needs: node, npm ci in tests/classic (done here if missing, before the
# namespace), /usr/bin/chromium. Ends with "N passed, N failed".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLASSIC="$HERE/../classic"
OUT=""
NETNS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --no-netns) NETNS=0; shift ;;
    *) echo "usage: $0 [--out DIR] [--no-netns]" >&2; exit 2 ;;
  esac
done

if [ ! -d "$CLASSIC/node_modules/playwright-core" ] || [ ! -d "$CLASSIC/node_modules/socketio2" ]; then
  (cd "$CLASSIC" && npm ci --no-audit --no-fund)
fi

if [ "$NETNS" = 1 ] && [ -z "${ROOMCAM_SELFTEST_NETNS:-}" ]; then
  args=(); [ -n "$OUT" ] && args=(--out "$OUT")
  exec unshare -n env ROOMCAM_SELFTEST_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' \
    "${BASH_SOURCE[0]}" "${args[@]}"
fi

[ -n "$OUT" ] || OUT="$(mktemp -d "${TMPDIR:-/tmp}/roomcam-selftest.XXXXXX")"
mkdir -p "$OUT"
echo "selftest: results in $OUT"

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }

# An array, not a function: a background function would be a subshell, and
# $! its pid rather than node's (the TERM of finish() must reach node).
CHECK=(node "$HERE/check-viewer.mjs")
# The pages prefer H.264 (as roomcam sends it), so the video check is strict.
VIDEO=(--expect-video)
[ -n "${SELFTEST_ANY_CODEC:-}" ] && VIDEO+=(--any-codec)

# Waits until FILE exists (written by --ready-file) or the process PID ends.
wait_file() {
  local file="$1" pid="$2" i
  for i in $(seq 1 300); do
    [ -s "$file" ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# Ends a background check-viewer (it reports and exits 0 if its scenario had
# passed) and returns its exit code.
finish() {
  local pid="$1"
  kill -TERM "$pid" 2>/dev/null || true
  local rc=0
  wait "$pid" || rc=$?
  return "$rc"
}

# json FILE EXPR: evaluates EXPR on the JSON line in FILE (as `r`).
json() { node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").pop()); console.log(eval(process.argv[2]))' "$1" "$2"; }

run_version() {
  local v="$1" port=$((18100 + $1)) base room
  local log="$OUT/server-v$v.log"
  node "$CLASSIC/server.js" --version "$v" --port "$port" --verbose >"$log" 2>&1 &
  local server=$!
  PIDS+=("$server")
  local i
  for i in $(seq 1 50); do grep -q "^listening on" "$log" && break; sleep 0.1; done
  if ! grep -q "^listening on" "$log"; then fail "sio$v server did not start"; cat "$log"; return; fi
  base="http://127.0.0.1:$port/"

  # -- device-offers: camera page first, the viewer answers ------------------
  room="offer-v$v"
  "${CHECK[@]}" "$base?room=$room&camera=1" --ready-file "$OUT/v$v-cam.ready" --expect-audio --stay 120 --timeout 60 \
    >"$OUT/v$v-cam.json" 2>"$OUT/v$v-cam.err" &
  local cam=$!
  PIDS+=("$cam")
  if ! wait_file "$OUT/v$v-cam.ready" "$cam"; then
    fail "sio$v device-offers: camera page never got into the room"; cat "$OUT/v$v-cam.err"
  elif "${CHECK[@]}" "$base?room=$room" "${VIDEO[@]}" --expect-audio --talk 2 --rejoin \
        --expect-role answerer --screenshot "$OUT/viewer-v$v.png" --timeout 30 \
        >"$OUT/v$v-viewer.json" 2>"$OUT/v$v-viewer.err"; then
    local eio want=$([ "$v" = 2 ] && echo 3 || echo 4)
    eio="$(json "$OUT/v$v-viewer.json" r.eio)"
    if [ "$eio" = "$want" ]; then
      pass "sio$v device-offers: $(json "$OUT/v$v-viewer.json" '`video ${r.video.codec} ${r.video.width}x${r.video.height} ${r.video.fps} fps, audio level ${r.audio.audioLevel.toFixed(3)}, talk ${r.talk.packetsSent} packets, rejoin as ${r.rejoin.role} ${r.rejoin.video.fps} fps, EIO ${r.eio}`')"
    else
      fail "sio$v device-offers: viewer used Engine.IO $eio, expected $want"
    fi
  else
    fail "sio$v device-offers: viewer"; cat "$OUT/v$v-viewer.err"
  fi
  if finish "$cam"; then
    pass "sio$v device-offers: camera page heard push-to-talk ($(json "$OUT/v$v-cam.json" '`audio level ${r.audio.audioLevel.toFixed(3)}`'))"
  else
    fail "sio$v device-offers: camera page"; cat "$OUT/v$v-cam.err"
  fi

  # -- viewer-offers: viewer first, camera page answers; then `full` -----------
  room="answer-v$v"
  "${CHECK[@]}" "$base?room=$room" --ready-file "$OUT/v$v-viewer2.ready" "${VIDEO[@]}" --expect-audio \
    --expect-role offerer --done-file "$OUT/v$v-viewer2.done" --stay 120 --timeout 60 >"$OUT/v$v-viewer2.json" 2>"$OUT/v$v-viewer2.err" &
  local viewer2=$!
  PIDS+=("$viewer2")
  if ! wait_file "$OUT/v$v-viewer2.ready" "$viewer2"; then
    fail "sio$v viewer-offers: viewer never got into the room"; cat "$OUT/v$v-viewer2.err"
  fi
  "${CHECK[@]}" "$base?room=$room&camera=1" --ready-file "$OUT/v$v-cam2.ready" --stay 120 --timeout 60 \
    >"$OUT/v$v-cam2.json" 2>"$OUT/v$v-cam2.err" &
  local cam2=$!
  PIDS+=("$cam2")
  if ! wait_file "$OUT/v$v-cam2.ready" "$cam2"; then
    fail "sio$v viewer-offers: camera page never got into the room"; cat "$OUT/v$v-cam2.err"
  fi
  if "${CHECK[@]}" "$base?room=$room" --expect-state full --timeout 30 >"$OUT/v$v-third.json" 2>"$OUT/v$v-third.err"; then
    pass "sio$v full: third page told the room is full"
  else
    fail "sio$v full"; cat "$OUT/v$v-third.err"
  fi
  # The viewer's scenario (video + audio) runs before its --stay: wait for it.
  wait_file "$OUT/v$v-viewer2.done" "$viewer2" || true
  if finish "$viewer2"; then
    pass "sio$v viewer-offers: $(json "$OUT/v$v-viewer2.json" '`video ${r.video.codec} ${r.video.width}x${r.video.height} ${r.video.fps} fps, audio level ${r.audio.audioLevel.toFixed(3)}`')"
  else
    fail "sio$v viewer-offers: viewer"; cat "$OUT/v$v-viewer2.err"
  fi
  finish "$cam2" || { fail "sio$v viewer-offers: camera page"; cat "$OUT/v$v-cam2.err"; }

  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}

run_version 2
run_version 4

echo "selftest: $PASSED passed, $FAILED failed (details in $OUT)"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
