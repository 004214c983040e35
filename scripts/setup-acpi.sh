#!/bin/sh
# Installs the ACPICA tools: the Boot tests disassemble Vireo's generated ACPI tables with `iasl -d`
# to prove a real AML/ACPI consumer accepts them. Idempotent: installs only when missing.
set -eu
if ! dpkg-query -W -f='${Status}' acpica-tools 2>/dev/null | grep -q "install ok installed"; then
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends acpica-tools
fi
