#!/usr/bin/env bash
# Runs a command inside a throw-away QEMU guest that has a soft-RoCE device (rdma_rxe), for
# the RDMA tests: the hosts' own kernel has no RDMA subsystem, Debian's kernel has rxe as a
# module. KVM does not work on our hosts, so the guest runs under TCG (correct, slow).
#
#   ci/rdma-guest.sh [OPTIONS] -- COMMAND [ARGS...]
#   ci/rdma-guest.sh [OPTIONS] --script FILE        (a file of commands, sh or with a #! line)
#
# Options:
#   --keep                  keep the work directory (initrd, overlay tree, console log)
#   --timeout SECONDS       bound for the whole guest run, boot included (default 300)
#   --skip-if-unavailable   where QEMU cannot run here, print "skipped: ..." and exit 0
#   --add PATH              also copy PATH (file or directory) into the guest at the same
#                           absolute path; ELF files bring their shared libraries (ldd)
#   --env NAME=VALUE        export NAME=VALUE for the command in the guest
#   --hugepages N           reserve N 2 MiB hugepages in the guest at /dev/hugepages
#   --mem SIZE              guest memory (default 1G)
#
# The guest: busybox, iproute2 (ip, rdma), bash, the verbs tools (ibverbs-utils, perftest,
# rdmacm-utils) and the rxe provider; rxe0 on dummy0 with 10.0.0.1/24, exported to the
# command as RXE_DEV=rxe0 RXE_IP=10.0.0.1 RXE_GID_INDEX=1 (the IPv4-mapped GID), and
# /usr/bin/rxe-pair to run a server/client pair (see ci/rdma-guest/rxe-pair). The command
# runs as root in the host's current directory; host files named in the command (words
# with a "/" naming a regular file outside the system directories, e.g.
# target/release/precursor) are copied in at the same absolute path with their libraries.
# No network: the guest has no NIC (-nic none).
#
# Exit status: the command's own status; 124 when the timeout hit; 125 when the guest did
# not report a status (boot or set-up failure: see the console); 77 when QEMU cannot run
# here (0 with --skip-if-unavailable); 2 on a usage error.
#
# Caches under target/rdma-guest/ (in .gitignore with target/): kernel/ holds the Debian
# kernel package and its unpacked tree (never installed on the host), initramfs/ the base
# image keyed by a hash of its inputs. Only a small per-run overlay (the command, the added
# files) is built each time and appended to the base as a second cpio archive.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
HERE=$ROOT/ci/rdma-guest
CACHE=${PRECURSOR_RDMA_GUEST_CACHE:-$ROOT/target/rdma-guest}

# Host packages: QEMU, the guest's userland (copied from the host), cpio/kmod for the image.
PACKAGES=(qemu-system-x86 busybox-static ibverbs-utils rdmacm-utils perftest rdma-core
          ibverbs-providers libibverbs-dev iproute2 bash cpio kmod xz-utils)
# Modules to load in the guest (dependencies are added in load order). crc32_generic is not
# a modprobe dependency of rdma_rxe but rxe needs it when a link is added; rdma_ucm is for
# rdma_cm; dummy carries rxe0; veth for tests that want a pair of netdevs.
MODULES=(crc32_generic rdma_rxe rdma_ucm dummy veth)
# Host programs copied into the base image (with their libraries).
GUEST_PROGRAMS=(/usr/sbin/ip /usr/bin/rdma /usr/bin/bash
  /usr/bin/ibv_devices /usr/bin/ibv_devinfo /usr/bin/ibv_rc_pingpong /usr/bin/ibv_ud_pingpong
  /usr/bin/ib_send_lat /usr/bin/ib_send_bw /usr/bin/ib_write_lat /usr/bin/ib_write_bw
  /usr/bin/ib_read_lat /usr/bin/ib_read_bw /usr/bin/ib_atomic_lat
  /usr/bin/rping /usr/bin/udaddy /usr/bin/ucmatose)
MULTIARCH=/usr/lib/x86_64-linux-gnu
# The rxe verbs provider is dlopen'ed by libibverbs: ldd of the programs does not show it.
RXE_PROVIDER=$MULTIARCH/libibverbs/librxe-rdmav34.so

KEEP=0
TIMEOUT=300
SKIP_OK=0
MEM=1G
HUGEPAGES=0
SCRIPT=
ADDS=()
ENVS=()
COMMAND=()

say() { echo "ci/rdma-guest: $*" >&2; }
die() { say "$*"; exit 2; }

# usage: prints the header comment of this file.
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2; }

# unavailable REASON: QEMU (or what it needs) cannot run here. Loud; exit 0 only if the
# caller asked for --skip-if-unavailable, 77 otherwise.
unavailable() {
  if [ "$SKIP_OK" -eq 1 ]; then
    echo "ci/rdma-guest: skipped: $* (the RDMA tests did NOT run)" >&2
    exit 0
  fi
  say "cannot run the guest: $* (--skip-if-unavailable makes this a skip)"
  exit 77
}

# parse_args "$@": fills the option variables and COMMAND or SCRIPT.
parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --keep) KEEP=1 ;;
      --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift ;;
      --skip-if-unavailable) SKIP_OK=1 ;;
      --add) ADDS+=("${2:?--add needs a path}"); shift ;;
      --env) [[ "${2:-}" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env needs NAME=VALUE"
             ENVS+=("$2"); shift ;;
      --hugepages) HUGEPAGES=${2:?--hugepages needs a count}; shift ;;
      --mem) MEM=${2:?--mem needs a size}; shift ;;
      --script) SCRIPT=${2:?--script needs a file}; shift ;;
      -h|--help) usage; exit 0 ;;
      --) shift; COMMAND=("$@"); break ;;
      *) usage; die "unknown argument: $1" ;;
    esac
    shift
  done
  [[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout: not a number of seconds: $TIMEOUT"
  [[ "$HUGEPAGES" =~ ^[0-9]+$ ]] || die "--hugepages: not a number: $HUGEPAGES"
  if [ -n "$SCRIPT" ]; then
    [ ${#COMMAND[@]} -eq 0 ] || die "give either --script FILE or -- COMMAND, not both"
    [ -f "$SCRIPT" ] || die "no such script: $SCRIPT"
  elif [ ${#COMMAND[@]} -eq 0 ]; then
    usage; die "nothing to run: give -- COMMAND [ARGS...] or --script FILE"
  fi
}

# ensure_host: installs the missing host packages (as root, through apt) and checks that
# QEMU can run with TCG; anything else is "unavailable".
ensure_host() {
  [ "$(uname -s)/$(uname -m)" = Linux/x86_64 ] || unavailable "needs a Linux x86_64 host"
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || unavailable "missing ${missing[*]} and no apt-get"
    [ "$(id -u)" -eq 0 ] || unavailable "missing ${missing[*]}; run ci/setup.sh (as root) first"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
      unavailable "apt-get install ${missing[*]} failed"
  fi
  qemu-system-x86_64 -accel help 2>/dev/null | grep -qx tcg ||
    unavailable "qemu-system-x86_64 does not run or has no TCG accelerator"
}

# kernel_package: prints the name of the current Debian 6.1 kernel package (the dependency
# of linux-image-amd64), or nothing when apt knows none.
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.[0-9]+-[0-9]+-amd64$/ { print $2; exit }'
}

# ensure_kernel: sets KVER and KTREE, downloading (apt-get download) and unpacking (dpkg-deb
# -x) the kernel package into $CACHE/kernel unless it is there. Offline, the newest cached
# kernel is used.
ensure_kernel() {
  local pkg deb tmp
  mkdir -p "$CACHE/kernel"
  pkg=$(kernel_package)
  if [ -z "$pkg" ]; then
    pkg=$(find "$CACHE/kernel" -maxdepth 1 -type d -name 'linux-image-*' -printf '%f\n' | sort -V | tail -1)
    [ -n "$pkg" ] || unavailable "apt knows no linux-image-6.1.*-amd64 and none is cached"
    say "apt resolves no kernel package; using the cached $pkg"
  fi
  KVER=${pkg#linux-image-}
  KTREE=$CACHE/kernel/$pkg
  if [ -f "$KTREE/lib/modules/$KVER/modules.dep" ]; then
    [ -f "$KTREE/vmlinux" ] || extract_vmlinux
    pick_kernel_image
    return 0
  fi
  tmp=$(mktemp -d "$CACHE/kernel/.download.XXXXXX")
  say "downloading and unpacking $pkg (once; cached in ${KTREE#"$ROOT"/})"
  # Root would hand the download to the _apt sandbox user, who cannot write here.
  (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg") ||
    { rm -rf "$tmp"; unavailable "apt-get download $pkg failed"; }
  deb=$(find "$tmp" -maxdepth 1 -name "${pkg}_*.deb" | head -1)
  dpkg-deb -x "$deb" "$tmp/tree"
  # The package leaves modules.dep to its postinst: made here for modprobe --show-depends.
  depmod -b "$tmp/tree" "$KVER"
  mv "$deb" "$CACHE/kernel/"
  rm -rf "$KTREE"
  mv "$tmp/tree" "$KTREE"
  rm -rf "$tmp"
  # Older kernels' trees and packages are dropped: one kernel is enough.
  find "$CACHE/kernel" -mindepth 1 -maxdepth 1 ! -name "$pkg" ! -name "${pkg}_*.deb" -exec rm -rf {} +
  extract_vmlinux
  pick_kernel_image
}

# extract_vmlinux: unpacks the uncompressed ELF kernel from the xz payload of vmlinuz into
# $KTREE/vmlinux when the kernel can boot it through PVH (CONFIG_PVH). QEMU then enters it
# directly: no firmware, no in-guest decompression, which under TCG saves ~5 s per boot.
extract_vmlinux() {
  local z=$KTREE/boot/vmlinuz-$KVER off
  grep -qx 'CONFIG_PVH=y' "$KTREE/boot/config-$KVER" 2>/dev/null || return 0
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$z" | head -1 | cut -d: -f1) || true
  [ -n "$off" ] || return 0
  # The payload is followed by other data, hence --single-stream and the ignored status.
  tail -c +$((off + 1)) "$z" | xz -dcq --single-stream > "$KTREE/vmlinux.tmp" 2>/dev/null || true
  if [ "$(head -c4 "$KTREE/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
    mv "$KTREE/vmlinux.tmp" "$KTREE/vmlinux"
  else
    rm -f "$KTREE/vmlinux.tmp"
  fi
}

# pick_kernel_image: sets KIMAGE to the PVH vmlinux when there is one, else to vmlinuz.
pick_kernel_image() {
  KIMAGE=$KTREE/boot/vmlinuz-$KVER
  [ -f "$KTREE/vmlinux" ] && KIMAGE=$KTREE/vmlinux
  return 0
}

# shared_libs FILE...: prints the shared libraries (resolved by the host's ldd) the ELF
# files need, one path a line; fails when one is not found. Non-ELF files are skipped.
shared_libs() {
  local f out
  for f in "$@"; do
    out=$(ldd "$f" 2>/dev/null) || continue
    if grep -q 'not found' <<<"$out"; then
      say "$f: shared libraries not found on the host:"; grep 'not found' <<<"$out" >&2; return 1
    fi
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
  done | sort -u
}

# copy_libs ROOT LIB...: copies the libraries into the staging ROOT where the guest's loader
# finds them: the dynamic loader at /usr/lib64, the others into the multiarch directory
# under the name they are asked for (the real file, not the symlink).
copy_libs() {
  local root=$1 lib; shift
  for lib in "$@"; do
    case "$lib" in
      */ld-linux-x86-64.so.2) cp -L "$lib" "$root/usr/lib64/" ;;
      *) cp -L "$lib" "$root$MULTIARCH/$(basename "$lib")" ;;
    esac
  done
}

# base_key: a hash of everything the base image is made of: the kernel, this script and the
# guest files, and the versions of the packages the guest's programs come from.
base_key() {
  {
    echo "$KVER"
    cat "$0" "$HERE/init" "$HERE/rxe-pair"
    dpkg-query -W -f='${Package} ${Version}\n' busybox-static iproute2 bash ibverbs-utils \
      perftest rdmacm-utils ibverbs-providers libibverbs1 librdmacm1 libc6 libgcc-s1 2>/dev/null
  } | sha256sum | cut -c1-16
}

# build_base OUT: builds the base initramfs (gzip'ed cpio) at OUT: busybox and its applets,
# the module chain with its load order, the programs, the rxe provider, libgcc_s (Rust
# binaries need it even when ldd is not asked), init and rxe-pair.
build_base() {
  local out=$1 r m ko libs
  r=$WORK/base
  mkdir -p "$r"/{usr/bin,usr/sbin,usr/lib/modules,usr/lib64,etc/libibverbs.d,proc,sys,dev,tmp,run,root,rg}
  mkdir -p "$r$MULTIARCH/libibverbs"
  # Merged /usr like the host, so that paths from the host's ldd resolve in the guest.
  ln -s usr/bin "$r/bin"; ln -s usr/sbin "$r/sbin"; ln -s usr/lib "$r/lib"; ln -s usr/lib64 "$r/lib64"

  cp /bin/busybox "$r/usr/bin/busybox"
  for m in $(/bin/busybox --list); do
    [ -e "$r/usr/bin/$m" ] || ln -s busybox "$r/usr/bin/$m"
  done

  for m in "${MODULES[@]}"; do
    modprobe -d "$KTREE" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
  done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$r/usr/lib/modules/"
    basename "$ko" >> "$r/etc/modules.order"
  done
  grep -q '^rdma_rxe\.ko' "$r/etc/modules.order" || { say "rdma_rxe not found in $KVER"; return 1; }

  # ip and rdma go to the same paths as on the host (/usr/sbin/ip beats busybox's applet).
  # rm first: a busybox applet link of the same name would be written through otherwise.
  for m in "${GUEST_PROGRAMS[@]}"; do rm -f "$r$m"; cp "$m" "$r$m"; done
  cp "$RXE_PROVIDER" "$r$MULTIARCH/libibverbs/"
  cp /etc/libibverbs.d/rxe.driver "$r/etc/libibverbs.d/"
  mapfile -t libs < <(shared_libs "${GUEST_PROGRAMS[@]}" "$RXE_PROVIDER"; echo "$MULTIARCH/libgcc_s.so.1")
  copy_libs "$r" "${libs[@]}"
  ldconfig -r "$r"

  echo "root:x:0:0:root:/root:/bin/sh" > "$r/etc/passwd"
  echo "root:x:0:" > "$r/etc/group"
  echo "127.0.0.1 localhost" > "$r/etc/hosts"
  install -m 755 "$HERE/init" "$r/init"
  install -m 755 "$HERE/rxe-pair" "$r/usr/bin/rxe-pair"

  # Padded to 512 bytes: the kernel looks for the next (overlay) archive on a 4-byte boundary.
  (cd "$r" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) |
    gzip -1 > "$out.$$.tmp"
  truncate -s %512 "$out.$$.tmp"
  mv "$out.$$.tmp" "$out"
  rm -rf "$r"
}

# ensure_base: sets BASE to the cached base image for the current inputs, building it (and
# dropping older ones) when it is not there.
ensure_base() {
  local key
  key=$(base_key)
  BASE=$CACHE/initramfs/base-$key.cpio.gz
  [ -f "$BASE" ] && return 0
  mkdir -p "$CACHE/initramfs"
  say "building the base image ${BASE#"$ROOT"/}"
  build_base "$BASE"
  find "$CACHE/initramfs" -maxdepth 1 -name 'base-*.cpio.gz' ! -name "base-$key.cpio.gz" -delete
}

# shell_quote WORD...: prints the words quoted for sh, separated by blanks.
shell_quote() {
  local w sep=
  for w in "$@"; do
    printf "%s'%s'" "$sep" "${w//\'/\'\\\'\'}"
    sep=' '
  done
}

# is_host_file WORD: true for a word naming (with a "/") a regular file of the host outside
# the system directories: such files are copied into the guest automatically.
is_host_file() {
  [[ "$1" == */* && -f "$1" ]] || return 1
  case "$(realpath -m "$1")" in
    /usr/*|/bin/*|/sbin/*|/lib/*|/lib64/*|/etc/*|/proc/*|/sys/*|/dev/*) return 1 ;;
  esac
}

# build_overlay OUT: the per-run cpio (uncompressed, appended to the base): /rg/run.sh (the
# command or script), /rg/env, and the added files at their absolute host paths with the
# shared libraries their ELF files need.
build_overlay() {
  local out=$1 r w p abs libs=() elves=()
  r=$WORK/overlay
  mkdir -p "$r/rg" "$r$MULTIARCH" "$r/usr/lib64"
  if [ -n "$SCRIPT" ]; then
    if head -c2 "$SCRIPT" | grep -q '^#!'; then cp "$SCRIPT" "$r/rg/run.sh"
    else { echo '#!/bin/sh'; cat "$SCRIPT"; } > "$r/rg/run.sh"; fi
  else
    for w in "${COMMAND[@]}"; do is_host_file "$w" && ADDS+=("$w"); done
    { echo '#!/bin/sh'; echo "exec $(shell_quote "${COMMAND[@]}")"; } > "$r/rg/run.sh"
  fi
  chmod 755 "$r/rg/run.sh"
  {
    echo "RG_MARKER=$MARKER"
    echo "RG_CWD=$(shell_quote "$(pwd -P)")"
    for w in "${ENVS[@]}"; do echo "export ${w%%=*}=$(shell_quote "${w#*=}")"; done
  } > "$r/rg/env"

  for p in "${ADDS[@]}"; do
    [ -e "$p" ] || die "--add: no such file or directory: $p"
    abs=$(realpath -s "$p")
    mkdir -p "$r$(dirname "$abs")"
    cp -a -L "$p" "$r$abs"
    [ -f "$p" ] && elves+=("$p")
  done
  if [ ${#elves[@]} -gt 0 ]; then
    mapfile -t libs < <(shared_libs "${elves[@]}")
    [ ${#libs[@]} -eq 0 ] || copy_libs "$r" "${libs[@]}"
  fi
  (cd "$r" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) > "$out"
}

# boot INITRD: boots the guest, streams its console with a "guest| " prefix (and into
# $WORK/console.log) and sets QEMU_RC and WALL (seconds).
boot() {
  local initrd=$1 t0 t1 st
  t0=$(date +%s.%N)
  set +e
  # stdin from /dev/null: nothing is typed at the console; stdout is the serial port.
  timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m "$MEM" -nic none \
    -display none -monitor none -serial stdio -no-reboot \
    -kernel "$KIMAGE" -initrd "$initrd" \
    -append "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init rg.hugepages=$HUGEPAGES" \
    < /dev/null 2>&1 | tr -d '\r' | tee "$WORK/console.log" | sed -u 's/^/guest| /'
  st=("${PIPESTATUS[@]}")
  set -e
  t1=$(date +%s.%N)
  QEMU_RC=${st[0]}
  WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
}

# cleanup: removes the work directory unless --keep.
cleanup() {
  [ -n "${WORK:-}" ] || return 0
  if [ "$KEEP" -eq 1 ]; then say "kept $WORK (initrd, overlay/, console.log)"
  else rm -rf "$WORK"; fi
}

main() {
  parse_args "$@"
  ensure_host
  local t0 prep status ready
  t0=$(date +%s.%N)
  mkdir -p "$CACHE"
  # Work directories of runs killed hard (kill -9) are left behind: drop those of old runs.
  find "$CACHE" -mindepth 1 -maxdepth 1 -name 'run.*' -mmin +600 -exec rm -rf {} +
  WORK=$(mktemp -d "$CACHE/run.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  ensure_kernel
  ensure_base
  # A fresh marker per run: output of the command cannot fake the status line.
  MARKER=RDMA-GUEST-EXIT-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  build_overlay "$WORK/overlay.cpio"
  cat "$BASE" "$WORK/overlay.cpio" > "$WORK/initrd"
  prep=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  say "booting $KVER ($(basename "$KIMAGE")) under TCG (image prepared in ${prep}s, timeout ${TIMEOUT}s)"
  boot "$WORK/initrd"

  status=$(sed -n "s/^$MARKER=\([0-9a-z-]*\)\$/\1/p" "$WORK/console.log" | tail -1)
  ready=$(sed -n 's/^rdma-guest: rxe0 ready .* at uptime \([0-9.]*\)s.*/\1/p' "$WORK/console.log")
  say "qemu wall time ${WALL}s (rxe0 ready at guest uptime ${ready:-?}s)"
  if [[ "$status" =~ ^[0-9]+$ ]]; then
    say "guest command exited $status"
    exit "$status"
  fi
  if [ "$QEMU_RC" -eq 124 ] || [ "$QEMU_RC" -eq 137 ]; then
    say "timed out after ${TIMEOUT}s (the guest reported no status)"
    exit 124
  fi
  say "the guest reported no status (${status:-no marker line}; qemu exited $QEMU_RC): see the console above"
  exit 125
}

main "$@"
