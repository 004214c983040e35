#!/bin/sh
# The migration-stream fuzzer: the destination's side of a live migration (IncomingMigration over
# a socket pair, then the restore checks that need no /dev/kvm), in the SnapshotFuzz binary with
# VIREO_FUZZ_TARGET=migration. Usage: Fuzz/MigrationStream/run.sh [seconds]; crashes go to
# $FUZZ_OUT (default /tmp/vireo-fuzz-migration).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
export VIREO_FUZZ_TARGET=migration
export FUZZ_OUT=${FUZZ_OUT:-/tmp/vireo-fuzz-migration}
exec "$root/Fuzz/Snapshot/run.sh" "$@"
