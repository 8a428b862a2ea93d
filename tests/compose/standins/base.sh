#!/usr/bin/env bash
# Builds (once) the stand-in for python:3.11-slim, from Debian's packages alone: no image
# registry is reached here. debootstrap's minimal bookworm with Debian's python3 (3.11) and a
# venv at /opt/python on PATH, so `pip install` works as in the official image (which installs
# into its own Python, not Debian's). It also trusts the CAs this machine trusts beyond Debian's
# own: pip inside a build reaches PyPI through the same network as the host's.
#
#   tests/compose/standins/base.sh TAG    import the image as TAG into the running daemon
#
# The root filesystem is cached as a tarball under $CACHE (default ~/.cache/tiller-compose),
# keyed by a hash of this script and of those extra CAs; a later run only imports it (seconds).
set -euo pipefail

TAG=${1:?usage: base.sh TAG}
CACHE=${TILLER_COMPOSE_CACHE:-$HOME/.cache/tiller-compose}
MIRROR=${TILLER_COMPOSE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
HOST_BUNDLE=/etc/ssl/certs/ca-certificates.crt

extra_cas() {
  # The certificates of the host's bundle that Debian's ca-certificates package does not ship
  # ($1: Debian's bundle), one file each in $2.
  python3 - "$HOST_BUNDLE" "$1" "$2" <<'PY'
import pathlib, re, sys
def certs(path):
    text = pathlib.Path(path).read_text()
    return re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
debian = set(certs(sys.argv[2]))
extra = [c for c in certs(sys.argv[1]) if c not in debian]
for n, cert in enumerate(extra):
    pathlib.Path(sys.argv[3], f"host-{n}.crt").write_text(cert + "\n")
PY
}

key=$(cat "$0" "$HOST_BUNDLE" | sha256sum | cut -c1-16)
tarball=$CACHE/base-$SUITE-$key.tar
mkdir -p "$CACHE"
exec 9>"$CACHE/.base.lock"
flock 9  # two runs started together build it once

if [ ! -f "$tarball" ]; then
  echo "compose tier: building the Debian base image (debootstrap, about a minute; cached)" >&2
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  extra_cas "$root/etc/ssl/certs/ca-certificates.crt" "$root/usr/local/share/ca-certificates"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
  chroot "$root" python3 -m venv /opt/python
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  # Older bases of this cache: a changed script or CA set made them unused.
  find "$CACHE" -maxdepth 1 -name "base-$SUITE-*.tar" ! -name "$(basename "$tarball")" -delete
fi

docker import \
  --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$tarball" "$TAG" >/dev/null
