#!/usr/bin/env bash
# The nested test host: runs a command inside a Linux "L1" booted under QEMU's TCG emulator, whose
# emulated AMD SVM (with nested paging) gives L1 a /dev/kvm with real-hardware semantics. On our
# development machines the host's own KVM executes guest kernel mode in an emulator and guest
# system calls never reach the guest kernel (shared/HOST-KVM.md); inside L1 they do, so tests that
# need guest user space run there.
#
#   scripts/nested-host.sh [options] [--] COMMAND [ARG...]
#
# The command runs as root with this machine's own file system as its root (shared read-only over
# 9p, so the host's build and guest artifacts are used as they are), in the current directory,
# with L1's own /proc, /sys, /dev, /run and a tmpfs /tmp (a working directory under the host's
# /tmp is shown in it, read-only). A share directory is mounted read-write
# at the same path, for files that must come back. The command's output is this script's output
# (written by L1 to .nested/output in the share and followed here; L1's own console, kernel
# messages included, is kept in .nested/console.log and shown too) and its exit status this
# script's exit status.
#
# Options:
#   --share DIR     the read-write directory (default: a new temporary one, removed afterwards
#                   unless --keep); created if missing; its path is $VIREO_NESTED_SHARE in L1
#   --keep          keep the default share and print its path
#   --interactive   connect this terminal to the command (a shell, `vireo run`); L1 ends with it
#   --memory SIZE   L1's memory (default 4G)   --cpus N   L1's vCPUs (default 2)
#   --timeout S     kill L1 after S seconds (default 3600; 0: no limit)
#   --stall S       kill L1 when its heartbeat (a file L1 rewrites every 15 s) has not changed for
#                   S seconds once it has appeared: L1 stopped responding (default 180; 0: never)
#   --quiet-stall S kill L1 when the command has printed nothing for S seconds (default 0: never):
#                   for a command, like a test suite with per-test timeouts, that is never quiet
#                   that long while L1 works
#   --tcg single|multi  one host thread for all of L1's vCPUs, or one each (default multi, or
#                   $VIREO_NESTED_TCG)
#   --qemu-cpu M    QEMU's CPU model for L1 (default max: TCG's with SVM and nested paging)
#   --print-l1      build (or find) L1 and print its files, then exit
# VIREO_QEMU names another qemu-system-x86_64. VIREO_* variables are passed on to the command. Exit status: the
# command's, or 124 on timeout, or 70 (with a one-line error) when L1 could not run it, or 75 (with
# a one-line error) when L1 stopped responding (--stall, --quiet-stall) and was killed: L1, not the
# command, failed.
# L1 (Debian's stock kernel from `apt-get download linux-image-amd64`, busybox-static, the modules
# named in scripts/nested/modules) is cached in ${VIREO_NESTED_DIR:-~/.cache/vireo/nested}.
set -euo pipefail
readonly RECIPE=1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${VIREO_NESTED_DIR:-$HOME/.cache/vireo/nested}
DK_LOG_PREFIX=nested-host
# shellcheck source=lib/debian-kernel.sh
source "$repo/scripts/lib/debian-kernel.sh"
log() { echo "nested-host: $*" >&2; }
die() { echo "nested-host: error: $*" >&2; exit 70; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; }

share= keep=0 interactive=0 memory=4G cpus=2 timeout_s=3600 stall_s=180 quiet_s=0 print_only=0 qemu_cpu=max
tcg_threads=${VIREO_NESTED_TCG:-multi}
while (($#)); do
    case "$1" in
        --share) share=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --interactive) interactive=1; shift ;;
        --memory) memory=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --stall) stall_s=$2; shift 2 ;;
        --quiet-stall) quiet_s=$2; shift 2 ;;
        --qemu-cpu) qemu_cpu=$2; shift 2 ;;
        --tcg) tcg_threads=$2; shift 2 ;;
        --print-l1) print_only=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        -*) usage; die "unknown option $1" ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || [ $print_only = 1 ] || { usage; die "no command given"; }
[[ $timeout_s =~ ^[0-9]+$ ]] || die "--timeout wants seconds, not '$timeout_s'"
if ! [[ $stall_s =~ ^[0-9]+$ ]] || { [ "$stall_s" -gt 0 ] && [ "$stall_s" -lt 30 ]; }; then
    die "--stall wants 0 or at least 30 seconds (L1's heartbeat comes every 15 s), not '$stall_s'"
fi
[[ $quiet_s =~ ^[0-9]+$ ]] || die "--quiet-stall wants seconds, not '$quiet_s'"
[[ $tcg_threads =~ ^(single|multi)$ ]] || die "--tcg wants single or multi, not '$tcg_threads'"

qemu=${VIREO_QEMU:-$(command -v qemu-system-x86_64 || true)}
[ -n "$qemu" ] && [ -x "$qemu" ] || die "qemu-system-x86_64 is missing${VIREO_QEMU:+ (VIREO_QEMU=$VIREO_QEMU)}: apt-get install qemu-system-x86 (or run scripts/setup.sh)"
for tool in apt-get dpkg-deb cpio gzip; do
    command -v $tool >/dev/null || die "$tool is missing (this script builds L1 from Debian packages)"
done

# --- L1: kernel + initramfs, cached by what they are built from ------------------------------
build_l1() {
    debian_kernel_fetch "${VIREO_DEBIAN_DIR:-$HOME/.cache/vireo/debian}" || exit 70
    local busybox_deb key dir work modules
    busybox_deb=$(debian_package_fetch busybox-static "${VIREO_DEBIAN_DIR:-$HOME/.cache/vireo/debian}/debs") || exit 70
    modules=$(grep -v '^#' "$repo/scripts/nested/modules" | xargs)
    key=$( { echo "recipe $RECIPE"; basename "$DEBIAN_KERNEL_DIR"; basename "$busybox_deb"; echo "$modules"
             cat "$repo/scripts/nested/l1-init"; declare -f build_l1 debian_initramfs_root; } | sha256sum | cut -c1-16)
    dir=$cache/l1-$key
    if [ ! -e "$dir/.complete" ]; then
        log "building L1 ($DEBIAN_KERNEL_RELEASE, busybox-static, modules: $modules)"
        work=$(mktemp -d)
        debian_initramfs_root "$work/root" "$busybox_deb" $modules
        cp "$repo/scripts/nested/l1-init" "$work/root/init"
        rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
        (cd "$work/root" && find . | cpio -o -H newc --quiet | gzip -1) >"$dir.tmp/initramfs.cpio.gz"
        cp "$DEBIAN_KERNEL_VMLINUZ" "$dir.tmp/vmlinuz"
        echo "$DEBIAN_KERNEL_RELEASE" >"$dir.tmp/release"
        touch "$dir.tmp/.complete"
        rm -rf "$dir" "$work"; mv "$dir.tmp" "$dir"
        # Earlier L1s are superseded (a run still using one keeps its open files).
        find "$cache" -maxdepth 1 -name 'l1-*' ! -name "l1-$key" -exec rm -rf {} +
    fi
    l1_dir=$dir
}
mkdir -p "$cache"
exec 9>"$cache/.lock"; flock 9
build_l1
flock -u 9
if [ $print_only = 1 ]; then
    echo "VIREO_L1_KERNEL=$l1_dir/vmlinuz"; echo "VIREO_L1_INITRAMFS=$l1_dir/initramfs.cpio.gz"
    echo "VIREO_L1_RELEASE=$(cat "$l1_dir/release")"; exit 0
fi

# --- the share and the command ---------------------------------------------------------------
if [ -z "$share" ]; then
    share=$(mktemp -d /tmp/vireo-nested.XXXXXX)
    [ $keep = 1 ] || trap 'rm -rf "$share"' EXIT
else
    mkdir -p "$share"; share=$(cd "$share" && pwd)
fi
case "$share" in /) die "the share cannot be /" ;; esac
rm -rf "$share/.nested"; mkdir -p "$share/.nested"
# L1 has its own /tmp: a working directory under the host's /tmp (a CI clone, say) is shown there.
tmp_keep=
case "$PWD/" in /tmp/?*/) tmp_keep=/tmp/$(cut -d/ -f3 <<<"$PWD") ;; esac
{
    printf 'NESTED_SHARE=%q\nNESTED_CWD=%q\nNESTED_TTY=%q\nNESTED_TERM=%q\nNESTED_TMP_KEEP=%q\n' \
        "$share" "$PWD" "$interactive" "${TERM:-linux}" "$tmp_keep"
} >"$share/.nested/config"
{
    echo "cd $(printf %q "$PWD") || exit 125"
    echo "export VIREO_NESTED_SHARE=$(printf %q "$share")"
    while IFS='=' read -r name _; do
        case "$name" in VIREO_NESTED_*) ;; VIREO_*|CI) echo "export $name=$(printf %q "${!name}")" ;; esac
    done < <(env)
    printf 'exec'; printf ' %q' "$@"; echo
} >"$share/.nested/command"

# --- boot L1 -----------------------------------------------------------------------------------
# -cpu max under TCG offers svm+npt; TCG needs no /dev/kvm, so this works on any x86-64 host.
# panic=-1 + -no-reboot: a dying L1 ends QEMU instead of hanging. loglevel=4: L1's kernel errors
# (KERN_ERR and worse: soft lockups, RCU stalls, hung tasks, oopses) reach the console and so the
# output and console.log; warnings and the boot chatter stay quiet.
qemu_args=(-accel "tcg,thread=$tcg_threads" -cpu "$qemu_cpu" -smp "$cpus" -m "$memory" -machine q35 -nodefaults -no-user-config
    -kernel "$l1_dir/vmlinuz" -initrd "$l1_dir/initramfs.cpio.gz"
    -append "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init"
    -pidfile "$share/.nested/qemu.pid" -name vireo-l1,debug-threads=on
    -virtfs "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap,id=host"
    -virtfs "local,path=$share,mount_tag=share,security_model=none,id=share"
    -display none -no-reboot -nic none)
if [ $interactive = 1 ] && [ -t 0 ]; then
    # Raw terminal straight to L1's ttyS0, no QEMU monitor in between: every key, Ctrl-C and
    # Ctrl-A included, reaches the command (so vireo's own Ctrl-A X works); L1 powers off when
    # the command ends.
    qemu_args+=(-chardev stdio,id=console,signal=off -serial chardev:console -monitor none)
else
    qemu_args+=(-serial stdio)
fi

# --- the watchdog: an L1 whose heartbeat stops is killed -------------------------------------
# L1 (scripts/nested/l1-init) rewrites .nested/heartbeat every 15 s from the moment the share is
# mounted. Twice in CI the whole L1 went silent, no output at all, until --timeout ended it half an
# hour later; now an L1 whose heartbeat is older than --stall seconds is killed (SIGKILL: a wedged
# QEMU may not honour anything else) and this script exits 75. Before killing, what QEMU was doing
# is noted in .nested/wedged: the CPU it used since the last heartbeat and its vCPU threads'
# states (R: L1 spinning; S: QEMU itself waiting; T: stopped), to tell the two kinds of wedge apart.
heartbeat=$share/.nested/heartbeat wedged=$share/.nested/wedged pidfile=$share/.nested/qemu.pid
output=$share/.nested/output
qemu_ticks() {  # pid: CPU clock ticks QEMU has used (utime + stime)
    local stat
    { stat=$(<"/proc/$1/stat"); } 2>/dev/null || { echo 0; return; }
    # shellcheck disable=SC2086  # split the fields after "(comm) "
    set -- ${stat##*) }
    echo $(( ${12} + ${13} ))
}
qemu_threads() {  # pid: "CPU 0/TCG R, CPU 1/TCG S, ..." (QEMU's vCPU threads and their states)
    local task comm stat out=
    for task in /proc/"$1"/task/*; do
        { comm=$(<"$task/comm") && stat=$(<"$task/stat"); } 2>/dev/null || continue
        case "$comm" in CPU*) stat=${stat##*) }; out+="${out:+, }$comm ${stat%% *}" ;; esac
    done
    echo "${out:-none found}"
}
# With --quiet-stall, an L1 whose heartbeat goes on while the command's output stays unchanged
# for that long is killed the same way (CI once saw a suite with per-test timeouts print nothing
# for 25 minutes while L1's heartbeat went on).
watchdog() {
    local mtime seen=0 now pid ticks=0 hz quiet_since=0 out_mtime
    set +e   # a background subshell: nothing here may end it but the checks below
    hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
    while sleep 5; do
        kill -0 $$ 2>/dev/null || return 0            # this script is gone: so is the pipeline
        mtime=$(stat -c %Y "$heartbeat" 2>/dev/null) || continue   # L1 has not got that far
        { pid=$(<"$pidfile"); } 2>/dev/null || continue
        # Only our QEMU (its command line names this share), never a reused pid.
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "path=$share,mount_tag=share" || continue
        printf -v now '%(%s)T' -1
        if [ "$quiet_s" -gt 0 ]; then
            # Quiet since the later of its last output and L1's first heartbeat.
            [ "$quiet_since" -gt 0 ] || quiet_since=$now
            out_mtime=$(stat -c %Y "$output" 2>/dev/null) || out_mtime=0
            [ "$out_mtime" -le "$quiet_since" ] || quiet_since=$out_mtime
            if [ $(( now - quiet_since )) -ge "$quiet_s" ]; then
                printf 'the command printed nothing for %ss while L1'"'"'s heartbeat went on\nQEMU (pid %s) vCPU threads: %s\n' \
                    $(( now - quiet_since )) "$pid" "$(qemu_threads "$pid")" >"$wedged"
                kill -KILL "$pid"
                return 0
            fi
        fi
        if [ "$mtime" != "$seen" ]; then seen=$mtime; ticks=$(qemu_ticks "$pid"); continue; fi
        [ "$stall_s" -gt 0 ] && [ $(( now - mtime )) -ge "$stall_s" ] || continue
        printf 'no heartbeat for %ss\nQEMU (pid %s) used %ss of CPU since the last heartbeat; vCPU threads: %s\n' \
            $(( now - mtime )) "$pid" $(( ($(qemu_ticks "$pid") - ticks) / hz )) "$(qemu_threads "$pid")" >"$wedged"
        kill -KILL "$pid"
        return 0
    done
}

log "booting L1 ($(cat "$l1_dir/release"), TCG, $cpus vCPUs, $memory) for: $*"
started=$(date +%s)
limit=(); [ "$timeout_s" -gt 0 ] && limit=(timeout --foreground --kill-after=10 "$timeout_s")
watchdog_pid=
if [ "$stall_s" -gt 0 ] || [ "$quiet_s" -gt 0 ]; then
    watchdog </dev/null >/dev/null 2>&1 &
    watchdog_pid=$!
fi
set +e
# QEMU's stderr is this script's (fd 3); the shell's own goes to /dev/null for the pipeline, so a
# QEMU killed by the watchdog or the timeout gets no "Killed" job line besides the error below.
if [ $interactive = 1 ]; then
    { "${limit[@]}" "$qemu" "${qemu_args[@]}" 2>&3 3>&-; qemu_status=$?; } 3>&2 2>/dev/null
else
    # L1's console is also kept, so that an L1 that stops early can be explained in one line. The
    # command's output arrives in a file (see scripts/nested/l1-init), followed here until QEMU
    # has ended (tail --pid reads the file once more after that).
    : >"$output"
    exec 4<&0
    { "${limit[@]}" "$qemu" "${qemu_args[@]}" <&4 2>&3 3>&- 4<&- | tee "$share/.nested/console.log" 2>&3 3>&-
      echo "${PIPESTATUS[0]}" >"$share/.nested/qemu.status"; } 3>&2 2>/dev/null &
    l1_job=$!
    exec 4<&-
    tail -n +1 -s 1 -F --pid="$l1_job" "$output" 2>/dev/null
    wait "$l1_job" 2>/dev/null
    qemu_status=$(cat "$share/.nested/qemu.status" 2>/dev/null || echo 70)
fi
if [ -n "$watchdog_pid" ]; then kill "$watchdog_pid" 2>/dev/null; wait "$watchdog_pid" 2>/dev/null; fi
set -e
elapsed=$(( $(date +%s) - started ))
if [ -s "$wedged" ]; then
    # A QEMU killed in a terminal's raw mode leaves it there.
    if [ $interactive = 1 ] && [ -t 0 ]; then stty sane 2>/dev/null || true; fi
    last_beat=$({ tr -d '\r' <"$heartbeat"; } 2>/dev/null | paste -sd'|' - | sed 's/|/ | /g') || true
    last_line=$({ tr -d '\r' <"$share/.nested/console.log"; } 2>/dev/null | tr -cd '[:print:]\n' \
        | grep -v '^[[:space:]]*$' | tail -1 | cut -c1-200) || true
    log "error: L1 stopped responding: $(head -1 "$wedged") (last heartbeat: ${last_beat:-none}; last console line: ${last_line:-none})"
    log "$(sed -n 2p "$wedged"); QEMU killed after ${elapsed}s wall (exit 75)"
    [ $keep = 1 ] && log "share kept: $share"
    exit 75
fi
if [ $qemu_status -eq 124 ] || [ $qemu_status -eq 137 ]; then
    last_beat=$({ tr -d '\r' <"$heartbeat"; } 2>/dev/null | paste -sd'|' - | sed 's/|/ | /g') || true
    log "error: L1 did not finish within ${timeout_s}s (killed; last heartbeat: ${last_beat:-none})"; exit 124
fi
# L1's own failures (no /dev/kvm, a share that would not mount) come back as one line.
[ -s "$share/.nested/error" ] && die "$(head -1 "$share/.nested/error")"
if [ ! -r "$share/.nested/rc" ]; then
    said=$(tr -d '\r' <"$share/.nested/console.log" 2>/dev/null | sed -n 's/^nested-host: error: //p' | tail -1)
    [ -n "$said" ] && die "$said"
fi
[ -r "$share/.nested/rc" ] || die "L1 ended (QEMU status $qemu_status after ${elapsed}s) without reporting the command's status"
status=$(cat "$share/.nested/rc")
log "command exited with status $status; L1 ran ${elapsed}s wall"
[ $keep = 1 ] && log "share kept: $share"
exit "$status"
