# Sourced by scripts/demo and scripts/test: checks and installs what roomcam
# needs on a Debian/Ubuntu machine, and names exactly what is missing when it
# cannot install it itself.

# Debian package → a command or file that shows it is installed.
declare -A ROOMCAM_BUILD_PACKAGES=(
  [pkg-config]=/usr/bin/pkg-config
  [cmake]=/usr/bin/cmake
  [clang]=/usr/bin/clang
  [libclang-dev]=/usr/lib/llvm-*/lib/libclang.so*
  [nasm]=/usr/bin/nasm
  [libasound2-dev]=/usr/include/alsa/asoundlib.h
  [gcc]=/usr/bin/gcc
)
declare -A ROOMCAM_TEST_PACKAGES=(
  [nodejs]=/usr/bin/node
  [npm]=/usr/bin/npm
  [chromium]=/usr/bin/chromium
  [iproute2]=/usr/sbin/ip
  [util-linux]=/usr/bin/unshare
  [coturn]=/usr/bin/turnserver
  # tests/https.rs: the README's reverse-proxy block in front of roomcam serve.
  [nginx]=/usr/sbin/nginx
  # tests/alerts_mqtt.rs: the broker Home Assistant would use, and a subscriber.
  [mosquitto]=/usr/sbin/mosquitto
  [mosquitto-clients]=/usr/bin/mosquitto_sub
  # tests/camera_choice.rs: libcamera's own V4L2 layer, as on a Pi.
  [libcamera-v4l2]=/usr/lib/*/v4l2-compat.so
  # tests/metrics.rs: promtool lints /metrics as Prometheus would read it.
  [prometheus]=/usr/bin/promtool
)

# The emulated board (board/emulated/test.sh): qemu, busybox and the tools
# that build its initramfs. (aarch64 also needs scripts/cross-build's toolchain.)
declare -A ROOMCAM_BOARD_PACKAGES=(
  [qemu-system-x86]=/usr/bin/qemu-system-x86_64
  [qemu-system-arm]=/usr/bin/qemu-system-aarch64
  [busybox-static]=/bin/busybox
  [cpio]=/usr/bin/cpio
  [kmod]=/usr/bin/kmod
  [binutils]=/usr/bin/objdump
  # board/emulated/test-drivers.sh: vimc, vicodec and v4l2-mem2mem built
  # from Debian's kernel source (the arm64 ones with scripts/cross-build's
  # gcc-aarch64-linux-gnu).
  [make]=/usr/bin/make
  [gcc-12]=/usr/bin/gcc-12
  [flex]=/usr/bin/flex
  [bison]=/usr/bin/bison
  [bc]=/usr/bin/bc
  [libelf-dev]=/usr/include/libelf.h
  [libssl-dev]=/usr/include/openssl/ssl.h
  [xz-utils]=/usr/bin/xz
)

roomcam_say() { printf '\033[1m%s\033[0m\n' "$*" >&2; }

# roomcam_missing NAME... : prints the packages of the named sets that are absent.
roomcam_missing() {
  local set pkg pattern
  for set in "$@"; do
    local -n packages="$set"
    for pkg in "${!packages[@]}"; do
      pattern=${packages[$pkg]}
      # shellcheck disable=SC2086
      compgen -G $pattern >/dev/null || echo "$pkg"
    done
  done
}

# roomcam_install SETNAME... : installs missing packages with apt, or explains.
roomcam_install() {
  local missing
  missing=$(roomcam_missing "$@" | sort | tr '\n' ' ')
  if [ -n "${missing// }" ]; then
    if ! command -v apt-get >/dev/null; then
      roomcam_say "roomcam needs these Debian/Ubuntu packages (or your distribution's equivalents): $missing"
      return 1
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null; then sudo="sudo"; else
        roomcam_say "missing packages: $missing — run as root: apt-get install -y $missing"
        return 1
      fi
    fi
    roomcam_say "installing: $missing"
    $sudo apt-get update -qq || true
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null || {
      # A machine image may carry qemu-utils from backports, which Breaks
      # the release's qemu-system-*: install the release's qemu-utils with them.
      local codename
      codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
      [[ " $missing " == *" qemu-system-"* ]] && [ -n "$codename" ] \
        && dpkg-query -W -f '${Version}' qemu-utils 2>/dev/null | grep -q bpo \
        && { roomcam_say "qemu-utils is a backport; installing the $codename one with qemu-system"
             DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --allow-downgrades $missing "qemu-utils/$codename" >/dev/null; }
    } || {
      roomcam_say "apt-get could not install: $missing"
      return 1
    }
    missing=$(roomcam_missing "$@" | tr '\n' ' ')
    if [ -n "${missing// }" ]; then
      roomcam_say "still missing after apt-get: $missing"
      return 1
    fi
  fi
  if ! command -v cargo >/dev/null; then
    roomcam_say "missing: a Rust toolchain (cargo). Install it with rustup (https://rustup.rs), version 1.94 or newer."
    return 1
  fi
}
