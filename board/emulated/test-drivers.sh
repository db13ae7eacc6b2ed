#!/usr/bin/env bash
# Builds the V4L2 test drivers Debian's kernel does not ship, vimc and
# vicodec (and, on amd64, the v4l2-mem2mem they need), as modules for the
# emulated board's kernel, from Debian's own kernel source:
#
#   board/emulated/test-drivers.sh x86_64|aarch64
#
# Called by board/emulated/test.sh after it has cached the kernel image in
# target/emulated/ARCH (kernel.ok). Once, cached in
# target/emulated/ARCH/test-drivers/ (only the .ko files and a stamp are
# kept; the work is skipped when they are there for the same kernel):
#   - apt-get download linux-source-6.1 at exactly the cached image's Debian
#     version (fails if the archive no longer has it), and the image's
#     linux-headers-KVER (its .config and Module.symvers) and
#     linux-headers-…-common;
#   - make olddefconfig modules_prepare with that .config and
#     KERNELRELEASE=KVER (what Debian's own build passes: its UTS_RELEASE is
#     6.1.0-57-ARCH, not the source's 6.1.192, so a LOCALVERSION alone cannot
#     give the same vermagic), VIDEO_VIMC=m, VIDEO_VICODEC=m and the
#     V4L2_MEM2MEM_DEV they select;
#   - builds only the modules the image lacks (M=…) against the package's
#     Module.symvers, so the symbol CRCs are the image's, and strips them.
# Prints the directory holding the .ko files on stdout.
#
# Needs (scripts/deps.sh ROOMCAM_BOARD_PACKAGES): gcc-12, make, flex, bison,
# bc, libelf-dev, libssl-dev, xz-utils, and for aarch64
# gcc-aarch64-linux-gnu.
set -euo pipefail
arch=${1:?usage: board/emulated/test-drivers.sh x86_64|aarch64}
cd "$(dirname "$0")/../.."
root=$PWD
say() { printf '== board/%s: %s\n' "$arch" "$*" >&2; }
case $arch in
  x86_64) deb_arch=amd64; karch=x86; cross="" ;;
  aarch64) deb_arch=arm64; karch=arm64; cross=aarch64-linux-gnu- ;;
  *) echo "unknown arch $arch (x86_64 or aarch64)" >&2; exit 2 ;;
esac
cache=$root/target/emulated/$arch
out=$cache/test-drivers
[ -f "$cache/kernel.ok" ] || { echo "no cached kernel in $cache: run board/emulated/test.sh $arch (it downloads it)" >&2; exit 1; }
kver=$(cat "$cache/kernel.ok")

# The modules to build: directory in the tree → .ko files it must give.
# v4l2-mem2mem is in the arm64 image already (CONFIG_V4L2_MEM2MEM_DEV=m),
# not in the amd64 one; videobuf2-*, v4l2-tpg and mc are in both.
mods=(vimc.ko vicodec.ko)
image_has() { grep -q "^CONFIG_$1=[ym]" "$cache"/kernel/boot/config-"$kver"; }
image_has V4L2_MEM2MEM_DEV || mods+=(v4l2-mem2mem.ko)

if [ -f "$out/ok" ] && [ "$(cat "$out/ok")" = "$kver" ]; then
  ok=1; for m in "${mods[@]}"; do [ -f "$out/$m" ] || ok=""; done
  [ -n "$ok" ] && { echo "$out"; exit 0; }
fi

t0=$(date +%s)
# The Debian version of the cached image (e.g. 6.1.192-3): from its .deb
# when test.sh kept it, else from the signed package's changelog.
kdeb=$(ls "$cache"/linux-image-"$kver"_*.deb 2>/dev/null | head -1 || true)
if [ -n "$kdeb" ]; then
  kdebver=$(dpkg-deb -f "$kdeb" Version)
else
  kdebver=$(zcat "$cache"/kernel/usr/share/doc/linux-image-"$kver"/changelog*.gz \
    | sed -n 's/.*Sign kernel from linux \([^ ]*\).*/\1/p' | head -1)
fi
[ -n "$kdebver" ] || { echo "cannot tell the Debian version of the cached kernel $kver in $cache" >&2; exit 1; }
kabi=${kver%-*}              # 6.1.0-57
flavour=${kver##*-}          # amd64 / arm64
series=${kver%%.*}.$(echo "$kver" | cut -d. -f2)  # 6.1

dl=$out/deb
rm -rf "$out" && mkdir -p "$dl"
say "downloading linux-source-$series $kdebver, linux-headers-$kver, linux-headers-$kabi-common"
(cd "$dl" && apt-get download -q "linux-source-$series=$kdebver" \
    "linux-headers-$kver:$deb_arch=$kdebver" "linux-headers-$kabi-common=$kdebver" >/dev/null) || {
  echo "apt-get cannot download linux-source-$series / linux-headers-$kver at $kdebver, the version of the cached kernel image" >&2
  echo "(apt-get update? or the archive has moved on: remove $cache to download the current kernel)" >&2
  exit 1
}
for d in "$dl"/*.deb; do
  v=$(dpkg-deb -f "$d" Version)
  [ "$v" = "$kdebver" ] || { echo "$(basename "$d") is $v, the kernel image is $kdebver: they must match" >&2; exit 1; }
done

say "unpacking the kernel source"
src=$out/src
mkdir -p "$src" "$out/hdr"
dpkg-deb --fsys-tarfile "$dl"/linux-source-*.deb | tar -xO "./usr/src/linux-source-$series.tar.xz" \
  | xz -dc -T2 | tar -x -C "$src" --strip-components=1
dpkg-deb -x "$dl"/linux-headers-"$kver"_*.deb "$out/hdr"
hdr=$out/hdr/usr/src/linux-headers-$kver
cp "$hdr/.config" "$src/.config"
cp "$hdr/Module.symvers" "$src/Module.symvers"

# Debian's compiler (the config records gcc-12), the image's release string.
kmake=(make -C "$src" -j2 ARCH="$karch" CROSS_COMPILE="$cross" CC="${cross}gcc-12" HOSTCC=gcc-12
       KERNELRELEASE="$kver" KBUILD_BUILD_TIMESTAMP=0)
cfg() { "$src/scripts/config" --file "$src/.config" "$@"; }
cfg --module VIDEO_VIMC --module VIDEO_VICODEC
image_has V4L2_MEM2MEM_DEV || cfg --module V4L2_MEM2MEM_DEV
# No debug info: the modules are stripped anyway, and it halves the build.
# (BTF needs vmlinux and pahole; neither changes symbol CRCs or layouts.)
cfg --disable DEBUG_INFO_BTF --disable DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT --enable DEBUG_INFO_NONE
say "make olddefconfig modules_prepare (ARCH=$karch${cross:+ CROSS_COMPILE=$cross})"
"${kmake[@]}" olddefconfig >/dev/null
for o in VIDEO_VIMC VIDEO_VICODEC V4L2_MEM2MEM_DEV; do
  grep -q "^CONFIG_$o=m" "$src/.config" || { echo "CONFIG_$o is not =m after olddefconfig" >&2; exit 1; }
done
"${kmake[@]}" modules_prepare >/dev/null
# modules_prepare regenerates nothing of Module.symvers; make sure it is the package's.
cmp -s "$hdr/Module.symvers" "$src/Module.symvers" || cp "$hdr/Module.symvers" "$src/Module.symvers"

dirs=(drivers/media/test-drivers/vimc drivers/media/test-drivers/vicodec)
if ! image_has V4L2_MEM2MEM_DEV; then
  # Only v4l2-mem2mem out of v4l2-core (videodev & co. are in the image).
  mkdir -p "$src/extra/v4l2-mem2mem"
  cp "$src/drivers/media/v4l2-core/v4l2-mem2mem.c" "$src/extra/v4l2-mem2mem/"
  echo 'obj-m := v4l2-mem2mem.o' > "$src/extra/v4l2-mem2mem/Kbuild"
  dirs=(extra/v4l2-mem2mem "${dirs[@]}")
fi
syms=()
for d in "${dirs[@]}"; do
  say "make M=$d modules"
  "${kmake[@]}" M="$d" ${syms:+KBUILD_EXTRA_SYMBOLS="${syms[*]}"} modules >/dev/null
  syms+=("$src/$d/Module.symvers")
done
for m in "${mods[@]}"; do
  ko=""; for d in "${dirs[@]}"; do [ -f "$src/$d/$m" ] && ko=$src/$d/$m; done
  [ -n "$ko" ] || { echo "the build gave no $m" >&2; exit 1; }
  "${cross}strip" --strip-debug -o "$out/$m" "$ko"
  vm=$(modinfo -F vermagic "$out/$m")
  case $vm in "$kver "*) ;; *) echo "$m: vermagic '$vm' is not the kernel's $kver" >&2; exit 1 ;; esac
done
rm -rf "$src" "$out/hdr" "$dl"
echo "$kver" > "$out/ok"
say "test drivers ${mods[*]} built in $(( $(date +%s) - t0 )) s"
echo "$out"
