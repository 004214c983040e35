# Sourced by the Linux end-to-end tests: the test guest's files, and an ext4 root disk made on the host without root.
#
# root_tree DIR INIT   -- DIR/{sbin,dev,proc,sys,vireo} with INIT as /sbin/init (add files after)
# root_image DIR IMAGE SIZE -- IMAGE: ext4 labelled vireo-root holding DIR, plus /dev/console
#                              (debugfs makes the device node, so no root is needed); false on error
root_tree() {
    mkdir -p "$1/sbin" "$1/dev" "$1/proc" "$1/sys" "$1/vireo" && cp "$2" "$1/sbin/init"
}

root_image() {
    truncate -s "$3" "$2" && mkfs.ext4 -q -F -L vireo-root -d "$1" "$2" || return 1
    printf 'cd /dev\nmknod console c 5 1\n' >"$2.debugfs"
    debugfs -w -f "$2.debugfs" "$2" >/dev/null 2>&1
    rm -f "$2.debugfs"
}

# guest_files REPO -- sets kernel= (the test guest's bzImage) and init32= (its init) from the
# VIREO_GUEST_* variables when they are set (the nested test host, whose view of the cache is
# read-only), else from scripts/build-linux-guest.sh; false with the reason in guest_error.
guest_files() {
    local vars
    if [ -n "${VIREO_GUEST_INITRAMFS:-}" ]; then vars=$(env | grep "^VIREO_GUEST_")
    else vars=$("$1/scripts/build-linux-guest.sh") || { guest_error="scripts/build-linux-guest.sh failed"; return 1; }; fi
    kernel=$(printf '%s\n' "$vars" | sed -n "s/^VIREO_GUEST_BZIMAGE=//p" | tail -1)
    init32=$(dirname "$(printf '%s\n' "$vars" | sed -n "s/^VIREO_GUEST_INITRAMFS=//p" | tail -1)")/init32
    [ -r "$kernel" ] && [ -r "$init32" ] || { guest_error="guest build printed no kernel/init32"; return 1; }
}
