# Sourced by the Linux end-to-end tests: an ext4 root disk made on the host, without root.
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
