#!/usr/bin/env bash
# Install the system packages of infra/system-packages.txt that are missing, with apt, when
# this runs as root (or with passwordless sudo) on a machine with apt-get; otherwise stop at
# once, before anything is downloaded, with the one command that installs them all.
#   scripts/system-packages.sh          check, and install what is missing
#   scripts/system-packages.sh --check  check only: exit 1 naming what is missing
set -euo pipefail
# SYSTEM_PACKAGES_LIST names another list (the tests use one with a package nobody has).
LIST=${SYSTEM_PACKAGES_LIST:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/infra/system-packages.txt"}

present() { # a command name, or a glob of a path
  if [[ $1 == /* ]]; then compgen -G "$1" >/dev/null; else command -v "$1" >/dev/null; fi
}

missing=()
while read -r probe package _; do
  [[ -z $probe || $probe == \#* ]] && continue
  present "$probe" || missing+=("$package")
done <"$LIST"

[[ ${#missing[@]} -eq 0 ]] && { echo "system packages: all present"; exit 0; }
command_line="apt-get install -y --no-install-recommends ${missing[*]}"
echo "system packages missing: ${missing[*]}" >&2
if [[ ${1:-} == --check ]]; then
  echo "install them with: sudo apt-get update && sudo $command_line" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "no apt-get here: install the Debian packages above (or your system's equivalents)" >&2
  exit 1
fi
if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "not root: install them with: sudo apt-get update && sudo $command_line" >&2
  exit 1
fi
started=$SECONDS
echo "installing with apt: ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}"
"$0" --check # what apt installed must now pass its probe
echo "system packages: installed in $((SECONDS - started)) s"
