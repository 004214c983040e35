#!/bin/bash
# Checks the synthetic bzImages in OUT (default ./out) the way a loader reads them: header magic
# and fields, payload located through payload_offset/payload_length, LE32 size trailer, and that
# the payload decompresses with the stock tool to exactly linux64-probe.elf (corrupt must not).
set -euo pipefail
OUT=${1:-out}
ELF="$OUT/linux64-probe.elf"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

le() { # le FILE OFFSET SIZE -> unsigned decimal (little-endian)
    od -An -t "u$3" -j "$2" -N "$3" --endian=little "$1" | tr -d ' '
}
fail() { echo "FAIL $1: $2"; exit 1; }

elf_size=$(stat -c %s "$ELF")
for kind in gzip xz lzma lz4 zstd bzip2 corrupt; do
    img="$OUT/probe-$kind.bzImage"
    [ "$(dd if="$img" bs=1 skip=$((0x202)) count=4 status=none)" = HdrS ] || fail "$kind" "no HdrS"
    [ "$(le "$img" $((0x1FE)) 2)" = $((0xAA55)) ] || fail "$kind" "boot_flag"
    [ "$(le "$img" $((0x206)) 2)" = $((0x020F)) ] || fail "$kind" "version"
    [ "$(le "$img" $((0x236)) 2)" = 1 ] || fail "$kind" "xloadflags"
    sects=$(le "$img" $((0x1F1)) 1)
    pm=$(( (sects + 1) * 512 ))
    off=$(le "$img" $((0x248)) 4)
    len=$(le "$img" $((0x24C)) 4)
    total=$(stat -c %s "$img")
    [ $((pm + off + len)) -le "$total" ] || fail "$kind" "payload runs past the file"
    [ "$(le "$img" $((pm + 0x200)) 1)" = $((0xFA)) ] || fail "$kind" "no 64-bit stub at pm+0x200"
    [ "$(dd if="$img" bs=1 skip=$((pm + $(le "$img" $((0x268)) 4))) count=4 status=none)" = LToP ] \
        || fail "$kind" "kernel_info"
    dd if="$img" of="$TMP/p" bs=1 skip=$((pm + off)) count="$len" status=none
    [ "$(le "$TMP/p" $((len - 4)) 4)" = "$elf_size" ] || fail "$kind" "size trailer"
    head -c $((len - 4)) "$TMP/p" > "$TMP/body"
    case $kind in
        gzip|corrupt) cmd="gzip -dc"; src="$TMP/p" ;;
        xz) cmd="xz -dc"; src="$TMP/body" ;;
        lzma) cmd="lzma -dc"; src="$TMP/body" ;;
        lz4) cmd="lz4 -dc"; src="$TMP/body" ;;
        zstd) cmd="zstd -qdc"; src="$TMP/body" ;;
        bzip2) cmd="bzip2 -dc"; src="$TMP/body" ;;
    esac
    if $cmd < "$src" > "$TMP/elf" 2>/dev/null && cmp -s "$TMP/elf" "$ELF"; then
        [ "$kind" != corrupt ] || fail "$kind" "corrupt payload decompressed cleanly"
        echo "ok $kind: pm at $pm, payload $len bytes at pm+$off, decompresses to the probe ELF"
    else
        [ "$kind" = corrupt ] || fail "$kind" "payload does not decompress to the probe ELF"
        echo "ok $kind: payload $len bytes at pm+$off fails to decompress, as intended"
    fi
done
