# Debian's stock kernel package (linux-image-amd64's current ABI), fetched with `apt-get download`
# and unpacked into a cache, for the nested test host's L1 and for the stock-kernel end-to-end test.
# Sourced, not run. Needs: apt-get, dpkg-deb. Functions print progress on stderr and die on error.
#
#   debian_package_fetch NAME DEST      download the .deb of NAME into DEST (keeps what is there)
#   debian_kernel_fetch CACHE           sets DEBIAN_KERNEL_DIR (unpacked package), DEBIAN_KERNEL_RELEASE,
#                                       DEBIAN_KERNEL_VMLINUZ, DEBIAN_KERNEL_MODULES (lib/modules/<release>)
#   debian_kernel_modules NAME...       prints the .ko paths (relative to DEBIAN_KERNEL_MODULES) of the
#                                       named modules and everything they depend on, dependencies first
#   debian_initramfs_root DIR BUSYBOX_DEB MODULE...
#                                       fills DIR with busybox-static and its applets in /bin, the named
#                                       modules and their dependencies under /modules, their load order
#                                       in /modules.order, and empty /proc, /sys, /dev

_dk_log() { echo "${DK_LOG_PREFIX:-debian-kernel}: $*" >&2; }
_dk_die() { echo "${DK_LOG_PREFIX:-debian-kernel}: error: $*" >&2; exit 1; }

# The package linux-image-amd64 points at today (e.g. linux-image-6.1.0-57-amd64).
debian_kernel_package() {
    local name
    name=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1)
    if [ -z "$name" ]; then
        _dk_log "apt has no linux-image-amd64 yet: running apt-get update"
        local sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get -qq update >&2 || _dk_die "apt-get update failed"
        name=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1)
    fi
    [ -n "$name" ] || _dk_die "apt-cache knows no linux-image-amd64 (is this Debian with its main archive in sources.list?)"
    echo "$name"
}

debian_package_fetch() {
    local name=$1 dest=$2 version deb attempt
    mkdir -p "$dest"
    # Two attempts: stale package lists name a version the archive no longer has (a new kernel
    # ABI, a security update), so a failed download refreshes them once and tries again.
    for attempt in 1 2; do
        version=$(apt-cache policy "$name" 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -1)
        if [ -n "$version" ] && [ "$version" != "(none)" ]; then
            deb=$(ls "$dest/${name}_"*"_amd64.deb" 2>/dev/null | grep -F "_${version//:/%3a}_" | head -1)
            [ -n "$deb" ] && { echo "$deb"; return 0; }
            _dk_log "downloading $name $version"
            # _apt cannot write into root-owned temporary directories; a world-writable one avoids the warning.
            local tmp; tmp=$(mktemp -d); chmod 0777 "$tmp"
            if (cd "$tmp" && apt-get -qq download "$name=$version" >&2) && mv "$tmp"/*.deb "$dest/"; then
                rm -rf "$tmp"
                deb=$(ls "$dest/${name}_"*"_amd64.deb" | grep -F "_${version//:/%3a}_" | head -1)
                [ -r "$deb" ] || _dk_die "no .deb of $name $version in $dest after downloading it"
                echo "$deb"; return 0
            fi
            rm -rf "$tmp"
        fi
        [ $attempt = 1 ] || break
        _dk_log "no $name ${version:-candidate} to download: refreshing the package lists (apt-get update)"
        local sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get -qq update >&2 || _dk_die "apt-get update failed"
    done
    _dk_die "apt-get download $name${version:+=$version} failed, also after apt-get update"
}

debian_kernel_fetch() {
    local cache=$1 package deb dir
    package=$(debian_kernel_package) || exit 1
    # A failed fetch has refreshed the lists, which may now name a newer kernel ABI: ask again.
    deb=$(debian_package_fetch "$package" "$cache/debs") ||
        { package=$(debian_kernel_package) && deb=$(debian_package_fetch "$package" "$cache/debs"); } || exit 1
    dir=$cache/$(basename "$deb" .deb)
    if [ ! -e "$dir/.complete" ]; then
        rm -rf "$dir" "$dir.tmp"
        dpkg-deb -x "$deb" "$dir.tmp" || _dk_die "dpkg-deb -x $deb failed"
        touch "$dir.tmp/.complete"
        mv "$dir.tmp" "$dir"
    fi
    DEBIAN_KERNEL_DIR=$dir
    DEBIAN_KERNEL_RELEASE=${package#linux-image-}
    DEBIAN_KERNEL_VMLINUZ=$dir/boot/vmlinuz-$DEBIAN_KERNEL_RELEASE
    DEBIAN_KERNEL_MODULES=$dir/lib/modules/$DEBIAN_KERNEL_RELEASE
    [ -r "$DEBIAN_KERNEL_VMLINUZ" ] && [ -d "$DEBIAN_KERNEL_MODULES" ] \
        || _dk_die "$deb has no boot/vmlinuz-$DEBIAN_KERNEL_RELEASE or lib/modules/$DEBIAN_KERNEL_RELEASE"
}

# Dependencies come from each module's own .modinfo section ("depends=a,b"), so neither kmod nor
# a modules.dep is needed.
debian_kernel_modules() {
    local -A path=() seen=()
    local ko name
    while IFS= read -r ko; do
        name=$(basename "$ko" .ko); path[${name//-/_}]=${ko#"$DEBIAN_KERNEL_MODULES"/}
    done < <(find "$DEBIAN_KERNEL_MODULES/kernel" -name '*.ko')
    _dk_visit() {
        local module=${1//-/_} deps dep
        [ -n "${seen[$module]:-}" ] && return 0
        seen[$module]=1
        [ -n "${path[$module]:-}" ] || _dk_die "module $1 is not in $DEBIAN_KERNEL_MODULES (built in, or misspelt?)"
        deps=$(tr '\0' '\n' <"$DEBIAN_KERNEL_MODULES/${path[$module]}" | sed -n 's/^depends=//p' | head -1)
        for dep in ${deps//,/ }; do _dk_visit "$dep"; done
        echo "${path[$module]}"
    }
    for name in "$@"; do _dk_visit "$name"; done
}

debian_initramfs_root() {
    local root=$1 busybox_deb=$2 unpacked applet ko
    shift 2
    mkdir -p "$root/bin" "$root/modules" "$root/proc" "$root/sys" "$root/dev"
    unpacked=$(mktemp -d)
    dpkg-deb -x "$busybox_deb" "$unpacked" || _dk_die "dpkg-deb -x $busybox_deb failed"
    cp "$unpacked/bin/busybox" "$root/bin/busybox"
    rm -rf "$unpacked"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    debian_kernel_modules "$@" >"$root/modules.order"
    while read -r ko; do
        mkdir -p "$root/modules/$(dirname "$ko")"
        cp "$DEBIAN_KERNEL_MODULES/$ko" "$root/modules/$ko"
    done <"$root/modules.order"
}
