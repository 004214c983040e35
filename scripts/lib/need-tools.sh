# Installs the Debian packages behind missing tools, the way scripts/setup.sh does (apt-get, with
# sudo when not root). Sourced, not run; the caller defines log and die.
#
#   need_tools COMMAND_OR_PATH:PACKAGE...
#
# sfdisk, mkfs.* and friends live in /usr/sbin, which a normal user's PATH lacks on Debian: the
# caller adds it to PATH first.
need_tools() {
    local t missing=() sudo=""
    for t in "$@"; do
        command -v "${t%%:*}" >/dev/null 2>&1 || [ -e "${t%%:*}" ] || missing+=("${t#*:}")
    done
    ((${#missing[@]})) || return 0
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    [ -z "$sudo" ] || command -v sudo >/dev/null 2>&1 ||
        die "missing ${missing[*]} and no sudo to install them: apt-get install ${missing[*]}"
    log "installing ${missing[*]}"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"; } >&2 ||
        die "apt-get install ${missing[*]} failed"
    for t in "$@"; do
        command -v "${t%%:*}" >/dev/null 2>&1 || [ -e "${t%%:*}" ] || die "no ${t%%:*} (package ${t#*:}) after installing it"
    done
}
