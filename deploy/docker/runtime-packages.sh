#!/usr/bin/env bash
# Prints the Debian packages that own the shared libraries the given binaries load
# directly (their DT_NEEDED entries); apt brings the rest as dependencies. The
# runtime images install exactly these, so they carry no compilers or -dev packages.
#   deploy/docker/runtime-packages.sh BINARY... > packages.txt
# Libraries under --skip DIR (e.g. a LibTorch unpacked in /opt/libtorch, copied into
# the image as files) are left out.
set -euo pipefail
skip=""
if [ "${1:-}" = "--skip" ]; then
  skip=$2
  shift 2
fi
[ $# -gt 0 ] || { echo "usage: $0 [--skip DIR] BINARY..." >&2; exit 2; }
for bin in "$@"; do
  needed=$(objdump -p "$bin" | awk '$1 == "NEEDED" {print $2}')
  # Where the dynamic loader finds each one for this binary.
  ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' |
    while read -r name path; do
      if grep -qxF "$name" <<<"$needed"; then echo "$path"; fi
    done
done | sort -u |
while read -r lib; do
  if [ -n "$skip" ] && [[ $(readlink -f "$lib") == "$skip"/* ]]; then continue; fi
  # usrmerge: dpkg knows a file by the path its package shipped it under.
  for candidate in "$lib" "$(readlink -f "$lib")" "${lib#/usr}" "/usr$lib" \
                   "$(readlink -f "$lib" | sed 's|^/usr||')"; do
    if owner=$(dpkg -S "$candidate" 2>/dev/null); then
      echo "${owner%%:*}"
      continue 2
    fi
  done
  echo "runtime-packages.sh: no package owns $lib" >&2
  exit 1
done | sort -u
