#!/usr/bin/env bash
# Builds the runner bundle: the disk image a containerDisk carries to every runner VM, holding
# the circleci-runner packages so that VMs install without the network.
#
# Usage: bundle/build.sh OUT_DIR PACKAGE...
#   PACKAGE: circleci-runner_<version>_<arch>.deb or circleci-runner-<version>.<arch>.rpm files.
# Writes OUT_DIR/tree (the layout below) and OUT_DIR/disk/runner-bundle.img (an ext4
# filesystem with that tree, made by mkfs.ext4 -d: no root, no loop device, no Docker).
#
# Layout (format 1; the start-up script in adapters/kubevirt/src/userdata.rs reads it):
#   BUNDLE           "format 1" and one "package <file>" line per package
#   deb/circleci-runner_<version>_<arch>.deb
#   rpm/circleci-runner-<version>.<arch>.rpm
#   SHA256SUMS       sha256sum output over deb/ and rpm/, relative paths
set -euo pipefail

die() {
  echo "bundle/build.sh: $*" >&2
  exit 1
}

[ "$#" -ge 2 ] || die "usage: build.sh OUT_DIR PACKAGE..."
out=$1
shift
tree="$out/tree"
rm -rf "$tree"
mkdir -p "$tree/deb" "$tree/rpm" "$out/disk"

debs=0
rpms=0
for package in "$@"; do
  [ -f "$package" ] || die "$package: no such file"
  file=$(basename "$package")
  case "$file" in
    circleci-runner_*_*.deb) dir=deb debs=$((debs + 1)) ;;
    circleci-runner-*.*.rpm) dir=rpm rpms=$((rpms + 1)) ;;
    *) die "$file: not a circleci-runner package (circleci-runner_<version>_<arch>.deb or circleci-runner-<version>.<arch>.rpm)" ;;
  esac
  case "$file" in
    *[!A-Za-z0-9._+~-]*) die "$file: unexpected characters in the file name" ;;
  esac
  [ ! -e "$tree/$dir/$file" ] || die "$file: given twice"
  cp "$package" "$tree/$dir/$file"
done
[ "$debs" -gt 0 ] || [ "$rpms" -gt 0 ] || die "no packages given"

{
  echo "format 1"
  (cd "$tree" && find deb rpm -type f | LC_ALL=C sort | sed 's/^/package /')
} >"$tree/BUNDLE"
(cd "$tree" && find deb rpm -type f | LC_ALL=C sort | xargs sha256sum) >"$tree/SHA256SUMS"

# Room for the packages plus ext4's metadata; 16 MiB at least.
kib=$(du -sk "$tree" | cut -f1)
size=$((kib + kib / 4 + 16384))
image="$out/disk/runner-bundle.img"
rm -f "$image"
mkfs.ext4 -q -F -L runnerbundle -d "$tree" "$image" "${size}k" ||
  die "mkfs.ext4 -d failed (needs e2fsprogs >= 1.43)"
echo "bundle: $debs deb, $rpms rpm -> $image"
