#!/usr/bin/env bash
# Builds Vireo's Linux test guest from Debian packages: a small kernel from Debian's
# linux-source-6.1 (tinyconfig + guest/kernel/vireo.config) and an uncompressed initramfs
# holding the 32-bit init from guest/init/ and busybox-static.
#
# Everything is cached outside the source tree, keyed by what it is built from, so a rerun is
# instant: ${VIREO_GUEST_DIR:-$HOME/.cache/vireo/guest}/
#   src-<linux-source version>/   the unpacked source tree and gen_init_cpio
#   kernel-<key>/                 vmlinux, bzImage, config, System.map (key: fragment + source)
#   guest-<key>/                  vmlinux, bzImage, initramfs.cpio, build-info.txt
#   current -> guest-<key>        the last guest built
# On success the artifact paths are printed on stdout as VIREO_GUEST_*=<path> lines (all
# progress goes to stderr), so callers can read them without guessing the cache layout.
set -euo pipefail

# Bump when a build step changes in a way the hashed inputs do not show.
readonly KERNEL_RECIPE=1
readonly GUEST_RECIPE=1

usage() {
    cat <<'EOF'
usage: scripts/build-linux-guest.sh [--out DIR]

Builds (or finds in the cache) Vireo's Linux test guest and prints where it is:
  VIREO_GUEST_VMLINUX, VIREO_GUEST_BZIMAGE, VIREO_GUEST_INITRAMFS, VIREO_GUEST_INFO.
  --out DIR   also copy the four files into DIR (the printed paths then point there)
Environment: VIREO_GUEST_DIR (cache, default ~/.cache/vireo/guest),
  VIREO_GUEST_KEEP_BUILD=1 (keep the kernel build tree for inspection).
Installs its build dependencies with apt-get when they are missing (needs root or sudo).
EOF
}

log() { echo "build-linux-guest: $*" >&2; }
die() { echo "build-linux-guest: error: $*" >&2; exit 1; }

out_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die "--out needs a directory"; out_dir=$2; shift 2 ;;
        --out=*) out_dir=${1#--out=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${VIREO_GUEST_DIR:-$HOME/.cache/vireo/guest}
fragment=$repo/guest/kernel/vireo.config
init_src=$repo/guest/init/init32.c
init_dir=$repo/guest/init
cpio_list=$repo/guest/init/initramfs.list
for f in "$fragment" "$init_src" "$cpio_list"; do
    [ -r "$f" ] || die "missing repo file $f"
done

# --- dependencies -----------------------------------------------------------------------
packages=(linux-source-6.1 build-essential bc flex bison libelf-dev libssl-dev cpio
          busybox-static gcc-multilib xz-utils util-linux)
missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=()
    elif command -v sudo >/dev/null; then sudo=(sudo)
    else die "missing packages (${missing[*]}) and neither root nor sudo to install them"; fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get -qq update >&2
    "${sudo[@]}" apt-get -qq install -y --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
fi

source_version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
busybox_version=$(dpkg-query -W -f='${Version}' busybox-static)
tarball=/usr/src/linux-source-6.1.tar.xz
[ -r "$tarball" ] || die "linux-source-6.1 is installed but $tarball is missing"
busybox=/bin/busybox
[ -x "$busybox" ] || die "busybox-static is installed but $busybox is missing"

mkdir -p "$cache"
# One builder at a time per cache (CI and a developer may share it).
exec 9>"$cache/.lock"
flock 9

hash_of() { sha256sum | cut -c1-16; }
kernel_key=$( { echo "kernel-recipe $KERNEL_RECIPE linux-source-6.1 $source_version"
                cat "$fragment"; } | hash_of)
guest_key=$( { echo "guest-recipe $GUEST_RECIPE kernel $kernel_key busybox $busybox_version"
               gcc --version | head -1; cat "$init_src" "$init_dir/init32.h" "$init_dir/devices32.c" "$init_dir/sequence32.c" "$cpio_list"; } | hash_of)
src_root=$cache/src-$source_version
src=$src_root/linux-source-6.1
kernel_dir=$cache/kernel-$kernel_key
guest_dir=$cache/guest-$guest_key

# --- source tree and gen_init_cpio ---------------------------------------------------------
if [ ! -e "$src_root/.complete" ]; then
    log "unpacking $tarball (linux-source-6.1 $source_version)"
    rm -rf "$src_root" "$src_root.tmp"
    mkdir -p "$src_root.tmp"
    tar -xf "$tarball" -C "$src_root.tmp"
    [ -f "$src_root.tmp/linux-source-6.1/Makefile" ] || die "$tarball has no linux-source-6.1/"
    # gen_init_cpio writes device nodes into the archive without root; build it once per tree.
    cc -O2 -o "$src_root.tmp/gen_init_cpio" "$src_root.tmp/linux-source-6.1/usr/gen_init_cpio.c"
    touch "$src_root.tmp/.complete"
    mv "$src_root.tmp" "$src_root"
fi

# Every line of the fragment must hold in the final .config; a symbol whose dependencies
# were not met is silently dropped by Kconfig, which is the usual way such configs rot.
verify_config() {
    local config=$1 line symbol actual bad=0
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*)
                grep -qxF -- "$line" "$config" && continue
                symbol=${line%%=*}
                actual=$(grep -E "^(# )?${symbol}[= ]" "$config" || echo "absent")
                log "config: wanted '$line', got '$actual'"; bad=1 ;;
            "# CONFIG_"*" is not set")
                symbol=${line#\# }; symbol=${symbol%% *}
                grep -q "^${symbol}=" "$config" || continue
                log "config: wanted '$line', got '$(grep "^${symbol}=" "$config")'"; bad=1 ;;
        esac
    done <"$fragment"
    [ $bad -eq 0 ] || die "$config does not match $fragment (see above: fix the fragment)"
}

# --- kernel --------------------------------------------------------------------------------
if [ ! -e "$kernel_dir/.complete" ]; then
    build=$cache/kbuild-$kernel_key
    rm -rf "$build" "$kernel_dir.tmp"
    mkdir -p "$build"
    export KBUILD_BUILD_USER=vireo KBUILD_BUILD_HOST=vireo
    kmake() { make -C "$src" O="$build" "$@" >>"$build/build.log" 2>&1; }
    log "configuring the kernel in $build (tinyconfig + $fragment)"
    kmake tinyconfig || { tail -30 "$build/build.log" >&2; die "make tinyconfig failed"; }
    (cd "$src" && scripts/kconfig/merge_config.sh -n -O "$build" "$build/.config" "$fragment") \
        >>"$build/build.log" 2>&1 || { tail -30 "$build/build.log" >&2; die "merge_config failed"; }
    kmake olddefconfig || { tail -30 "$build/build.log" >&2; die "make olddefconfig failed"; }
    verify_config "$build/.config"
    jobs=$(nproc)
    log "building bzImage and vmlinux with -j$jobs (a few minutes; log: $build/build.log)"
    started=$(date +%s)
    kmake -j"$jobs" bzImage vmlinux || { tail -40 "$build/build.log" >&2; die "kernel build failed"; }
    seconds=$(( $(date +%s) - started ))
    release=$(make -s -C "$src" O="$build" kernelrelease 2>/dev/null | tail -1)
    log "kernel $release built in ${seconds}s"
    mkdir -p "$kernel_dir.tmp"
    cp "$build/vmlinux" "$build/arch/x86/boot/bzImage" "$build/System.map" "$kernel_dir.tmp/"
    cp "$build/.config" "$kernel_dir.tmp/config"
    { echo "kernel_release=$release"; echo "kernel_build_seconds=$seconds"
      echo "kernel_build_jobs=$jobs"; echo "kernel_built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } >"$kernel_dir.tmp/kernel-info.txt"
    touch "$kernel_dir.tmp/.complete"
    mv "$kernel_dir.tmp" "$kernel_dir"
    [ "${VIREO_GUEST_KEEP_BUILD:-0}" = 1 ] || rm -rf "$build"
fi

# --- init and initramfs --------------------------------------------------------------------
if [ ! -e "$guest_dir/.complete" ]; then
    work=$guest_dir.tmp
    rm -rf "$work"
    mkdir -p "$work"
    log "building the 32-bit init and the initramfs"
    # -nostdlib/-ffreestanding: no libc, system calls only through int $0x80 (see init32.c).
    gcc -m32 -march=i686 -static -nostdlib -ffreestanding -fno-pic -no-pie -O2 \
        -fno-stack-protector -fno-asynchronous-unwind-tables -fno-builtin \
        -Wall -Wextra -Werror -Wl,--build-id=none \
        -o "$work/init32" "$init_src" "$init_dir/devices32.c" "$init_dir/sequence32.c" -lgcc || die "compiling $init_src failed"
    if objdump -d "$work/init32" | grep -qwE 'syscall|sysenter'; then
        die "$work/init32 contains syscall/sysenter; it must use int \$0x80 only"
    fi
    VIREO_INIT32=$work/init32 VIREO_BUSYBOX=$busybox \
        "$src_root/gen_init_cpio" -t 0 "$cpio_list" >"$work/initramfs.cpio" \
        || die "gen_init_cpio $cpio_list failed"
    listing=$(cpio -it --quiet <"$work/initramfs.cpio" | sort | tr '\n' ' ')
    for wanted in init bin/busybox bin/sh dev/console proc sys; do
        case " $listing" in *" $wanted "*) ;; *) die "initramfs lacks /$wanted (has: $listing)" ;; esac
    done
    # Hard links where possible: the kernel files are large and never modified.
    for f in vmlinux bzImage; do
        ln "$kernel_dir/$f" "$work/$f" 2>/dev/null || cp "$kernel_dir/$f" "$work/$f"
    done
    {
        cat "$kernel_dir/kernel-info.txt"
        echo "linux_source=linux-source-6.1 $source_version"
        echo "kernel_key=$kernel_key"
        echo "config_fragment_sha256=$(sha256sum <"$fragment" | cut -d' ' -f1)"
        echo "guest_key=$guest_key"
        echo "busybox_static=$busybox_version"
        echo "init32_sha256=$(sha256sum <"$work/init32" | cut -d' ' -f1)"
        echo "initramfs_bytes=$(stat -c %s "$work/initramfs.cpio")"
        echo "guest_built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } >"$work/build-info.txt"
    touch "$work/.complete"
    rm -rf "$guest_dir"
    mv "$work" "$guest_dir"
fi
ln -sfn "guest-$guest_key" "$cache/current"

result=$guest_dir
if [ -n "$out_dir" ]; then
    mkdir -p "$out_dir"
    for f in vmlinux bzImage initramfs.cpio build-info.txt; do
        cp -f "$guest_dir/$f" "$out_dir/$f"
    done
    result=$(cd "$out_dir" && pwd)
fi
log "guest ready in $result"
echo "VIREO_GUEST_VMLINUX=$result/vmlinux"
echo "VIREO_GUEST_BZIMAGE=$result/bzImage"
echo "VIREO_GUEST_INITRAMFS=$result/initramfs.cpio"
echo "VIREO_GUEST_INFO=$result/build-info.txt"
