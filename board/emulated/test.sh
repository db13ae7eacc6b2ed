#!/usr/bin/env bash
# The emulated board: roomcam on REAL kernel drivers (vivid for V4L2,
# snd-aloop for ALSA) inside qemu, no guest network.
#
#   board/emulated/test.sh x86_64|aarch64 [--encode-cost]
#
# --encode-cost boots the same kernel with only examples/encode_cost.rs
# under `-icount shift=0` and one vCPU (the guest clock then advances 1 ns
# per guest instruction) and prints H.264 encode instructions per frame
# instead of running the board test: a measurement, it asserts nothing.
# ENCODE_COST_BIN=PATH runs that binary instead of building the example
# (e.g. an OpenH264 built without NEON, for comparison);
# ENCODE_COST_ARGS="FRAMES WARMUP" (default "30 5").
#
# Downloads Debian's own kernel package (cached in target/emulated/ARCH),
# builds an initramfs (busybox-static, the modules, roomcam, the
# board_viewer example and their libraries), boots it under qemu-system
# (TCG) with -nic none, and inside the guest runs `roomcam serve`,
# `roomcam run --camera /dev/video0 --microphone/--speaker on the loopback`
# and board_viewer, which checks pictures, tones, talk-back and resume
# after rmmod/modprobe vivid (see examples/board_viewer.rs; the camera is
# `auto`, which must pick vivid among vimc's and vicodec's nodes); then
# `roomcam run --camera libcamera` on vimc through libcamera's V4L2 layer,
# and board_viewer --video-only checks its pictures (vimc's sensor draws
# the same colour bars) and prints `libcamera (vimc): N fps, colours ok`.
# After each phase the daemon's capture → encoded access unit latency is
# printed (BOARD: latency …). Prints the figures; exit status 0 only if
# every check of every phase passed.
#
# BOARD_PHASES="m2m vivid libcamera" (default) or some of them, to work on one;
# BOARD_LIBCAMERA_LOG sets LIBCAMERA_LOG_LEVELS for the libcamera phase
# (default V4L2Compat:INFO,*:WARN; libcamera takes the first pattern that
# matches a category, so V4L2Compat:DEBUG must come before *).
#
# Before that, a smoke check of the test drivers Debian does not ship,
# vimc and vicodec (built once by board/emulated/test-drivers.sh from
# Debian's source of the same kernel), and of Debian's libcamera 0.0.3
# (its packages extracted into the initramfs at their real paths):
# `cam -l` must list the vimc camera, `cam --capture=10` capture 10
# frames, vicodec make its encoder/decoder nodes. It prints
# "BOARD: vimc/libcamera smoke FAILED: ..." on failure but does not stop
# or fail the roomcam checks; vivid is loaded first and stays /dev/video0.
#
# Needs: qemu-system-x86 / qemu-system-arm, busybox-static, cpio, kmod,
# the kernel build tools of test-drivers.sh (all in scripts/deps.sh
# ROOMCAM_BOARD_PACKAGES), and for aarch64 the cross toolchain of
# scripts/cross-build (gcc-aarch64-linux-gnu, libasound2-dev:arm64,
# libc6:arm64).
set -euo pipefail
arch=${1:?usage: board/emulated/test.sh x86_64|aarch64 [--encode-cost]}
mode=board
case ${2:-} in
  "") ;;
  --encode-cost) mode=encode-cost ;;
  *) echo "unknown option $2 (--encode-cost)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.."
root=$PWD
t_start=$(date +%s)
say() { printf '== board/%s: %s\n' "$arch" "$*" >&2; }

case $arch in
  x86_64)
    deb_arch=amd64; triple=x86_64-linux-gnu; rust_target=""
    qemu=(qemu-system-x86_64 -M q35 -cpu qemu64 -m 1024)
    console=ttyS0
    # TCG on x86_64 keeps up with 640x480 at 25 fps.
    video="--size 640x480 --fps 25 --bitrate 600"; frames=40; min_fps=3; libcamera_frames=20
    # vivid prefers YU12 (a plain copy); force YUYV here so the SIMD
    # conversion runs on a real driver (aarch64 keeps YU12).
    camera_format=YUYV ;;
  aarch64)
    deb_arch=arm64; triple=aarch64-linux-gnu; rust_target=aarch64-unknown-linux-gnu
    qemu=(qemu-system-aarch64 -M virt -cpu cortex-a57 -m 1024)
    console=ttyAMA0
    # Emulating arm64 on x86 is several times slower: a smaller picture at
    # a lower rate.
    video="--size 320x240 --fps 10 --bitrate 300"; frames=20; min_fps=1; libcamera_frames=30
    camera_format=auto ;;
  *) echo "unknown arch $arch (x86_64 or aarch64)" >&2; exit 2 ;;
esac

video=${BOARD_VIDEO:-$video}
cache=$root/target/emulated/$arch
mkdir -p "$cache"

# ---------------------------------------------------------------- kernel
if [ ! -f "$cache/kernel.ok" ]; then
  if [ "$deb_arch" = amd64 ]; then
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  else
    pkg=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-/{print $2; exit}')
    pkg=${pkg%:arm64}
  fi
  [ -n "$pkg" ] || { echo "cannot find the kernel package for $deb_arch (apt-get update?)" >&2; exit 1; }
  say "downloading $pkg"
  rm -rf "$cache/kernel" && mkdir -p "$cache/kernel"
  (cd "$cache" && rm -f linux-image-*.deb && apt-get download -q "$pkg:$deb_arch" >/dev/null)
  dpkg-deb -x "$cache"/linux-image-*.deb "$cache/kernel"
  kver=$(ls "$cache/kernel/lib/modules")
  depmod -b "$cache/kernel" "$kver"
  echo "$kver" > "$cache/kernel.ok"
fi
kver=$(cat "$cache/kernel.ok")
kimage=$(ls "$cache"/kernel/boot/vmlinuz-*)

# ---------------------------------------------------------------- test drivers
# vimc and vicodec (and v4l2-mem2mem where the image lacks it), built once
# from Debian's source of this kernel (board/emulated/test-drivers.sh).
if [ "$mode" = board ]; then
  t_drivers=$(date +%s)
  drivers=$("$root/board/emulated/test-drivers.sh" "$arch")
  drivers_s=$(( $(date +%s) - t_drivers ))
fi

# ---------------------------------------------------------------- binaries
if [ "$mode" = board ]; then
  targets=(--bin roomcam --example board_viewer --example m2m_roundtrip)
else
  targets=(--example encode_cost)
fi
t_build=$(date +%s)
if [ -n "$rust_target" ]; then
  bindir=${CARGO_TARGET_DIR:-$root/target}/$rust_target/release
  sysroot=/usr/$triple
  libdirs=("$sysroot/lib" "/usr/lib/$triple" "/lib/$triple")
else
  bindir=${CARGO_TARGET_DIR:-$root/target}/release
  libdirs=("/lib/$triple" "/usr/lib/$triple" "/lib64")
fi
if [ "$mode" = encode-cost ] && [ -n "${ENCODE_COST_BIN:-}" ]; then
  say "using $ENCODE_COST_BIN"
else
  say "building ${targets[*]} (release${rust_target:+, $rust_target})"
  cargo build --release --locked ${rust_target:+--target "$rust_target"} "${targets[@]}" >&2
fi
build_s=$(( $(date +%s) - t_build ))

# ---------------------------------------------------------------- initramfs
say "building the initramfs"
rd=$cache/initramfs
rm -rf "$rd" && mkdir -p "$rd"/{bin,sbin,etc,proc,sys,dev,tmp,run,lib,usr/share}
if [ "$deb_arch" = amd64 ]; then
  cp /bin/busybox "$rd/bin/busybox"
else
  # busybox-static for arm64, from Debian, cached like the kernel.
  if [ ! -f "$cache/busybox" ]; then
    (cd "$cache" && rm -f busybox-static_*.deb && apt-get download -q "busybox-static:arm64" >/dev/null)
    dpkg-deb -x "$cache"/busybox-static_*.deb "$cache/bb"
    cp "$cache/bb/bin/busybox" "$cache/busybox"
  fi
  cp "$cache/busybox" "$rd/bin/busybox"
fi
if [ "$mode" = board ]; then
  bins=("$bindir/roomcam" "$bindir/examples/board_viewer" "$bindir/examples/m2m_roundtrip")
else
  bins=("${ENCODE_COST_BIN:-$bindir/examples/encode_cost}")
fi
for b in "${bins[@]}"; do cp "$b" "$rd/bin/$(basename "$b")"; done

# Shared libraries the two binaries need, found through the ELF NEEDED
# entries (works for a foreign arch too, unlike ldd).
needed() { objdump -p "$1" 2>/dev/null | awk '/NEEDED/{print $2}'; }
interp=$(readelf -l "${bins[0]}" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
todo=()
for b in "${bins[@]}"; do todo+=($(needed "$b")); done
declare -A seen=()
while [ ${#todo[@]} -gt 0 ]; do
  lib=${todo[0]}; todo=("${todo[@]:1}")
  [ -n "${seen[$lib]:-}" ] && continue; seen[$lib]=1
  found=""
  for d in "${libdirs[@]}"; do [ -e "$d/$lib" ] && { found=$d/$lib; break; }; done
  [ -n "$found" ] || { echo "library $lib not found in ${libdirs[*]}" >&2; exit 1; }
  mkdir -p "$rd/lib/$triple"
  cp -L "$found" "$rd/lib/$triple/$lib"
  todo+=($(needed "$found"))
done
mkdir -p "$rd$(dirname "$interp")"
if [ -n "$rust_target" ]; then cp -L "$sysroot/lib/$(basename "$interp")" "$rd$interp"; else cp -L "$interp" "$rd$interp"; fi
mkdir -p "$rd/etc"
echo "/lib/$triple" > "$rd/etc/ld.so.conf"
# alsa-lib reads its configuration to resolve hw:Loopback,…
cp -r /usr/share/alsa "$rd/usr/share/alsa"

# Modules: vivid and snd-aloop with their dependencies, and modules.dep so
# the guest's busybox modprobe (and the viewer's rmmod/modprobe) work.
mods=$(modprobe -d "$cache/kernel" -S "$kver" --show-depends vivid; modprobe -d "$cache/kernel" -S "$kver" --show-depends snd-aloop)
mdir=$rd/lib/modules/$kver
mkdir -p "$mdir"
echo "$mods" | awk '/^insmod/{print $2}' | sort -u | while read -r ko; do
  rel=${ko#"$cache/kernel/lib/modules/$kver/"}
  mkdir -p "$mdir/$(dirname "$rel")"
  case $ko in
    *.xz) xz -dc "$ko" > "$mdir/${rel%.xz}" ;;
    *.zst) zstd -qdc "$ko" > "$mdir/${rel%.zst}" ;;
    *) cp "$ko" "$mdir/$rel" ;;
  esac
done
sed -e 's/\.ko\.xz/.ko/g; s/\.ko\.zst/.ko/g' "$cache/kernel/lib/modules/$kver/modules.dep" > "$mdir/modules.dep"
if [ "$mode" = board ]; then
  # The test drivers in extra/, with the image's modules they depend on
  # (mc, videodev, videobuf2-*, v4l2-tpg, v4l2-mem2mem on arm64), and
  # their modules.dep lines from a depmod run over the initramfs' tree.
  mkdir -p "$mdir/extra"
  cp "$drivers"/*.ko "$mdir/extra/"
  built=" $(cd "$drivers" && ls *.ko | sed 's/\.ko$//' | tr '\n' ' ')"
  for ko in "$drivers"/*.ko; do
    for dep in $(modinfo -F depends "$ko" | tr ',' ' '); do
      [[ "$built" == *" $dep "* ]] && continue
      modprobe -d "$cache/kernel" -S "$kver" --show-depends "$dep" | awk '/^insmod/{print $2}'
    done
  done | sort -u | while read -r ko; do
    rel=${ko#"$cache/kernel/lib/modules/$kver/"}
    mkdir -p "$mdir/$(dirname "$rel")"
    case $ko in
      *.xz) xz -dc "$ko" > "$mdir/${rel%.xz}" ;;
      *.zst) zstd -qdc "$ko" > "$mdir/${rel%.zst}" ;;
      *) cp "$ko" "$mdir/$rel" ;;
    esac
  done
  tmpdep=$(mktemp -d)
  mkdir -p "$tmpdep/lib/modules"
  cp -r "$mdir" "$tmpdep/lib/modules/$kver"
  rm -f "$tmpdep/lib/modules/$kver/modules."*
  for f in modules.order modules.builtin modules.builtin.modinfo; do
    sed -e 's/\.ko\.xz/.ko/g; s/\.ko\.zst/.ko/g' "$cache/kernel/lib/modules/$kver/$f" > "$tmpdep/lib/modules/$kver/$f"
  done
  depmod -b "$tmpdep" "$kver"
  grep '^extra/' "$tmpdep/lib/modules/$kver/modules.dep" >> "$mdir/modules.dep"
  rm -rf "$tmpdep"
fi

# libcamera (Debian 12's 0.0.3: libcamera0.0.3, -ipa, -v4l2 and -tools for
# `cam`), its files at their real paths (/usr/lib/TRIPLE/libcamera/ for the
# IPA modules, their .sign files and proxies, /usr/lib/TRIPLE/v4l2-compat.so,
# /usr/share/libcamera) and every library they need. The packages, and any
# dependency package a library is needed from (its direct Depends, fetched
# only when a NEEDED library is in neither the initramfs nor the host's
# directories for TRIPLE), are downloaded once and kept extracted in
# target/emulated/ARCH/libcamera/.
if [ "$mode" = board ]; then
  lc=$cache/libcamera
  lc_pkgs=(libcamera0.0.3 libcamera-ipa libcamera-v4l2 libcamera-tools)
  lc_fetch() {  # PACKAGE... : download and extract into $lc/pkg/NAME
    local p todo=()
    for p in "$@"; do [ -d "$lc/pkg/$p" ] || todo+=("$p:$deb_arch"); done
    [ ${#todo[@]} -gt 0 ] || return 0
    mkdir -p "$lc/deb" "$lc/pkg"
    say "downloading ${todo[*]}"
    (cd "$lc/deb" && apt-get download -q "${todo[@]}" 2>&1 >/dev/null | { grep -v '^W: Download is performed unsandboxed' || true; } >&2)
    for p in "${todo[@]}"; do
      p=${p%:*}
      rm -rf "$lc/pkg/$p.tmp"
      dpkg-deb -x "$(ls "$lc/deb/${p}"_*_"$deb_arch".deb "$lc/deb/${p}"_*_all.deb 2>/dev/null | head -1)" "$lc/pkg/$p.tmp"
      mv "$lc/pkg/$p.tmp" "$lc/pkg/$p"
    done
  }
  lc_fetch "${lc_pkgs[@]}"
  # cam and the libraries, modules, proxies and data; not qcam (Qt) nor
  # lc-compliance.
  for p in "${lc_pkgs[@]}"; do
    (cd "$lc/pkg/$p" && find . \( -type f -o -type l \) ! -path './usr/share/doc/*' ! -path './usr/share/lintian/*' \
       ! -name qcam ! -name lc-compliance ! -name libcamerify) | while read -r f; do
      mkdir -p "$rd/$(dirname "$f")"; cp -a "$lc/pkg/$p/$f" "$rd/$f"
    done
  done
  lc_find() {  # SONAME [RUNPATH-DIR...]: prints PACKAGE PATH of the first hit (PACKAGE "-" = the host)
    local p d lib=$1; shift
    for d in "$@"; do  # an absolute RUNPATH is the packages' path first
      for p in $(ls "$lc/pkg"); do [ -e "$lc/pkg/$p$d/$lib" ] && { echo "$p $lc/pkg/$p$d/$lib"; return; }; done
      [ -e "$d/$lib" ] && { echo "${from} $d/$lib"; return; }
    done
    set -- "$lib"
    for p in $(ls "$lc/pkg"); do
      for d in "$lc/pkg/$p/lib/$triple" "$lc/pkg/$p/usr/lib/$triple"; do
        [ -e "$d/$1" ] && { echo "$p $d/$1"; return; }
      done
    done
    for d in "${libdirs[@]}"; do [ -e "$d/$1" ] && { echo "- $d/$1"; return; }; done
    return 0
  }
  # (file, package it came from) pairs still to walk
  lc_todo=()
  for p in "${lc_pkgs[@]}"; do
    while read -r f; do lc_todo+=("$p" "$f"); done < <(cd "$rd" && find usr/bin usr/lib -type f \
      \( -name '*.so*' -o -name '*_proxy' -o -name cam \) ! -name '*.sign' | while read -r f; do
        [ -e "$lc/pkg/$p/$f" ] && echo "$rd/$f"; done)
  done
  while [ ${#lc_todo[@]} -gt 0 ]; do
    from=${lc_todo[0]}; f=${lc_todo[1]}; lc_todo=("${lc_todo[@]:2}")
    # RUNPATH (e.g. libpulse's $ORIGIN/pulseaudio), searched first.
    runpath=$(objdump -p "$f" | awk '/RUNPATH|RPATH/{print $2}' | tr ':' ' ')
    runpath=${runpath//\$ORIGIN/$(dirname "$f")}
    for lib in $(needed "$f"); do
      [ -e "$rd/lib/$triple/$lib" ] || [ -e "$rd/usr/lib/$triple/$lib" ] && continue
      # shellcheck disable=SC2086
      hit=$(lc_find "$lib" $runpath)
      if [ -z "$hit" ] && [ "$from" != - ]; then
        deps=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances \
          "$from:$deb_arch" | awk '/^ *\|?(Pre)?Depends: [^<]/{print $2}' | sed 's/:.*//' | grep -v '^libqt5' | sort -u)
        # (not Qt: only qcam, which is left out, needs it)
        # shellcheck disable=SC2086
        lc_fetch $deps
        # shellcheck disable=SC2086
        hit=$(lc_find "$lib" $runpath)
      fi
      [ -n "$hit" ] || { echo "libcamera: library $lib (needed by $f) not found" >&2; exit 1; }
      mkdir -p "$rd/lib/$triple"
      cp -L "${hit#* }" "$rd/lib/$triple/$lib"
      lc_todo+=("${hit%% *}" "${hit#* }")
    done
  done
fi

# The daemon's settings that differ from a real board: TCG needs longer
# ALSA buffers (>= 8 periods, or it overruns), and the camera format forced
# where a conversion path is to be exercised on a real driver.
mkdir -p "$rd/etc"
# libcamera's vimc gives RGB only: the camera format is left to roomcam.
printf '[audio]\nperiods = 8\n' > "$rd/etc/roomcam-libcamera.toml"
cat > "$rd/etc/roomcam.toml" <<EOF
[camera]
format = "${BOARD_CAMERA_FORMAT:-$camera_format}"
[audio]
periods = 8
EOF
vivid_opts="n_devs=1 node_types=0x1"
# BOARD_PHASES: which roomcam phases run (default all three; fewer are for
# working on one: the verdict then covers those only).
phases=" ${BOARD_PHASES:-m2m vivid libcamera} "
run_m2m=0; [[ "$phases" == *" m2m "* ]] && run_m2m=1
run_vivid=0; [[ "$phases" == *" vivid "* ]] && run_vivid=1
run_libcamera=0; [[ "$phases" == *" libcamera "* ]] && run_libcamera=1
if [ "$mode" = board ]; then
  # The vimc/libcamera and vicodec smoke check, run after vivid has taken
  # /dev/video0; a failure is reported and the roomcam checks go on.
  cat > "$rd/bin/board-smoke" <<'EOF'
#!/bin/busybox sh
failed() { echo "BOARD: vimc/libcamera smoke FAILED: $*"; }
export PATH=/bin:/sbin:/usr/bin
export LIBCAMERA_LOG_LEVELS='*:WARN' LIBCAMERA_LOG_NO_COLOR=1
# libcamera enumerates through libudev, which skips a device udevd has not
# recorded (no /run/udev/data/cMAJOR:MINOR): no udevd here, so record the
# media and V4L2 nodes there are.
udev_db() {
  mkdir -p /run/udev/data
  for d in /sys/class/video4linux/* /sys/bus/media/devices/*; do
    [ -e "$d/dev" ] && : > "/run/udev/data/c$(cat "$d/dev")"
  done
}
t0=$(cut -d' ' -f1 /proc/uptime)
if ! modprobe vimc; then
  failed "modprobe vimc"
else
  i=0; while ! grep -qs vimc /sys/bus/media/devices/*/model && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  udev_db
  cam -l >/tmp/cam-l 2>&1; rc=$?
  sed 's/^/[cam -l] /' /tmp/cam-l
  cam_id=$(grep -m1 -E "^[0-9]+: .*vimc" /tmp/cam-l)
  if [ -z "$cam_id" ]; then
    failed "cam -l lists no vimc camera (exit $rc)"
  else
    echo "BOARD: libcamera camera $cam_id"
    n=${cam_id%%:*}
    timeout 150 cam -c "$n" --capture=10 >/tmp/cam-c 2>&1; rc=$?
    sed 's/^/[cam -c] /' /tmp/cam-c
    frames=$(grep -c 'seq:' /tmp/cam-c)
    last=$(grep 'seq:' /tmp/cam-c | tail -1)
    if [ "$rc" = 0 ] && [ "$frames" -ge 10 ]; then
      echo "BOARD: libcamera captured $frames frames from vimc; last: $last"
    else
      failed "cam -c $n --capture=10: exit $rc, $frames frames${last:+; last: $last}"
    fi
  fi
fi
if ! modprobe vicodec; then
  failed "modprobe vicodec"
else
  sleep 0.5
  echo "BOARD: video nodes: $(ls /dev/video* | tr '\n' ' ')"
  for d in /sys/class/video4linux/video*; do echo "BOARD:   /dev/${d##*/}: $(cat "$d/name")"; done
  grep -q stateful-encoder /sys/class/video4linux/video*/name && grep -q stateful-decoder /sys/class/video4linux/video*/name \
    || failed "vicodec made no encoder/decoder /dev/video nodes"
fi
echo "BOARD: vimc/libcamera/vicodec smoke took $(awk -v t0="$t0" '{printf "%.1f", $1 - t0}' /proc/uptime) s"
EOF
  chmod +x "$rd/bin/board-smoke"
fi
if [ "$mode" = encode-cost ]; then
  cat > "$rd/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "BOARD: kernel \$(uname -r), \$(nproc) cpu, -icount shift=0"
dmesg | grep -iE 'pmu|perf' | sed 's/^/BOARD: dmesg: /'
$(basename "${bins[0]}") ${ENCODE_COST_ARGS:-30 5}
echo "BOARD-EXIT=\$?"
poweroff -f
EOF
else
cat > "$rd/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t tmpfs tmp /tmp
ip link set lo up
echo "BOARD: kernel \$(uname -r), \$(nproc) cpus, up \$(cut -d' ' -f1 /proc/uptime) s"
modprobe vivid $vivid_opts || echo "BOARD: modprobe vivid failed"
modprobe snd-aloop pcm_substreams=2 || echo "BOARD: modprobe snd-aloop failed"
ls /dev/video* /dev/snd/ 2>&1 | tr '\n' ' '; echo
board-smoke 2>&1
# roomcam's V4L2 memory-to-memory encoder on vicodec: pictures both ways,
# decoded back and checked, reopen, unbind under an open encoder.
m2m_exit=0
if [ $run_m2m = 1 ]; then
m2m_roundtrip \${BOARD_M2M_FRAMES:-60} 2>&1
m2m_exit=\$?
fi
export BOARD_VIVID_OPTS="$vivid_opts"
roomcam devices 2>&1 | sed 's/^/[devices] /'
roomcam serve --listen 127.0.0.1:8080 2>&1 | sed 's/^/[serve] /' &
sleep 1
# Capture → encoded access unit as the daemon logged it when stopped, with
# the mode its camera ran in (issue 11's figure: V4L2 vs libcamera).
latency() {
  l=\$(grep -a -o 'capture to encoded access unit: .*' "\$2" | tail -1)
  m=\$(grep -a -o -E '[0-9]+x[0-9]+ [A-Z0-9]+ at [0-9.]+ fps, [0-9]+ mmap buffers' "\$2" | tail -1)
  echo "BOARD: latency \$1 (\${m:-mode not logged}): \${l:-no figure logged}"
}
vivid_exit=0
if [ $run_vivid = 1 ]; then
# camera auto: vivid (video0) among vimc's and vicodec's nodes, never a
# codec node.
sh -c 'echo \$\$ > /tmp/vivid-device.pid; exec env RUST_LOG=info,roomcam::media::sinks::alsa_speaker=debug roomcam run --config /etc/roomcam.toml --server http://127.0.0.1:8080 --room board --camera auto \\
  --microphone hw:Loopback,1,0 --speaker hw:Loopback,0,1 $video' \\
  2>&1 | tee /tmp/vivid-device.log | sed 's/^/[device] /' &
sleep 2
board_viewer --server http://127.0.0.1:8080 --room board --feed hw:Loopback,0,0 --tap hw:Loopback,1,1 \\
  --frames ${BOARD_FRAMES:-$frames} --min-fps ${BOARD_MIN_FPS:-$min_fps}
vivid_exit=\$?
kill \$(cat /tmp/vivid-device.pid); sleep 1
latency "vivid (V4L2)" /tmp/vivid-device.log
fi
libcamera_exit=0
if [ $run_libcamera = 1 ]; then
# libcamera (vimc) through libcamera's own V4L2 layer, which roomcam loads
# itself (re-executing with v4l2-compat.so preloaded). libcamera's logger
# takes the first pattern that matches a category: V4L2Compat before *.
sh -c 'echo \$\$ > /tmp/libcamera-device.pid; exec env LIBCAMERA_LOG_LEVELS="${BOARD_LIBCAMERA_LOG:-V4L2Compat:INFO,*:WARN}" LIBCAMERA_LOG_NO_COLOR=1 \\
  RUST_LOG=info,roomcam::media::sources::libcamera=debug roomcam run --config /etc/roomcam-libcamera.toml --server http://127.0.0.1:8080 --room libcamera \\
  --camera libcamera --microphone none --speaker null $video' 2>&1 | tee /tmp/libcamera-device.log | sed 's/^/[device] /' &
sleep 2
board_viewer --server http://127.0.0.1:8080 --room libcamera --video-only "libcamera (vimc)" \\
  --frames ${BOARD_LIBCAMERA_FRAMES:-$libcamera_frames} --min-fps ${BOARD_MIN_FPS:-$min_fps}
libcamera_exit=\$?
kill \$(cat /tmp/libcamera-device.pid); sleep 1
latency "libcamera (vimc)" /tmp/libcamera-device.log
fi
echo "BOARD: v4l2m2m (vicodec) phase exit \$m2m_exit, vivid phase exit \$vivid_exit, libcamera (vimc) phase exit \$libcamera_exit"
[ \$m2m_exit = 0 ] && [ \$vivid_exit = 0 ] && [ \$libcamera_exit = 0 ]
echo "BOARD-EXIT=\$?"
poweroff -f
EOF
fi
chmod +x "$rd/init"
(cd "$rd" && find . | cpio -o -H newc --quiet | gzip -1 > "$cache/initramfs.cpio.gz")
say "initramfs $(du -h "$cache/initramfs.cpio.gz" | cut -f1)"

# ---------------------------------------------------------------- boot
say "booting $kimage under ${qemu[0]} (TCG, -nic none)"
t_boot=$(date +%s)
log=$cache/console.log; [ "$mode" = board ] || log=$cache/console-$mode.log
set +e
# (grep -a: `roomcam devices` prints vimc's bus_info with its NUL padding.)
# -nic none already gives the guest no network; the namespace makes sure
# the host side of qemu has none either.
if [ "$(id -u)" = 0 ]; then netns=(unshare -n); else netns=(unshare -rn); fi
if [ "$mode" = encode-cost ]; then
  # One vCPU, and a guest clock that counts instructions: 1 ns each.
  qemu+=(-smp 1 -icount shift=0)
else
  qemu+=(-smp 2)
fi
timeout "${BOARD_TIMEOUT:-420}" "${netns[@]}" "${qemu[@]}" -accel tcg -nographic -no-reboot -nic none \
  -kernel "$kimage" -initrd "$cache/initramfs.cpio.gz" \
  -append "console=$console rdinit=/init panic=-1 quiet loglevel=3" </dev/null 2>&1 | tee "$log" | grep -a --line-buffered -E '^(BOARD|board|ENCODE|libcamera \(vimc\)|m2m|v4l2m2m)|V4L2Compat|\[device\].*(camera|microphone|speaker|talk-back|WARN|ERROR)|panicked'
set -e
boot_s=$(( $(date +%s) - t_boot ))
code=$(sed -n 's/.*BOARD-EXIT=\([0-9]*\).*/\1/p' "$log" | tail -1)
say "build ${build_s} s${drivers_s:+, test drivers ${drivers_s} s}, guest ${boot_s} s, total $(( $(date +%s) - t_start )) s; console log: $log"
if [ "$code" != 0 ]; then
  say "FAILED (exit ${code:-none}); last lines:"
  tail -40 "$log" >&2
  exit 1
fi
if [ "$mode" = board ]; then say "PASS"; else say "measured (ENCODE-COST lines above)"; fi
