#!/bin/bash
# get-consul.sh [DEST]: fetch Debian bullseye's consul 1.8.7 without touching the machine's apt state.
# Prints the path of the consul binary on its last line. Used by .ci/run and by the test fixtures.
set -euo pipefail
DEST=${1:-$(cd "$(dirname "$0")/.." && pwd)/.cache/consul}
BIN="$DEST/pkg/usr/bin/consul"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$DEST"/apt/lists/partial "$DEST"/apt/cache/archives/partial
DEST=$(cd "$DEST" && pwd)
# The Debian mirror the machine already uses: deb822 sources first, then one-line sources.list.
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if [ -z "$MIRROR" ] && [ -r /etc/apt/sources.list ]; then
  MIRROR=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if($i ~ /^[a-z+]+:\/\//){print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$MIRROR" ] || { echo "no Debian mirror found in the apt configuration" >&2; exit 1; }
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bullseye main" > "$DEST/apt/sources.list"
APT=(-o Dir::Etc::SourceList="$DEST/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$DEST/apt/lists" -o Dir::Cache="$DEST/apt/cache" -o APT::Get::List-Cleanup=0
     -o APT::Sandbox::User=root)
apt-get "${APT[@]}" -qq update >&2
( cd "$DEST" && apt-get "${APT[@]}" -qq download consul=1.8.7+dfsg1-2+b3 >&2 )
dpkg -x "$DEST"/consul_1.8.7+dfsg1-2+b3_amd64.deb "$DEST/pkg"
rm -rf "$DEST/apt" "$DEST"/consul_*.deb
"$BIN" version | sed -n 1p >&2  # sed reads it all: head would close the pipe early (SIGPIPE under pipefail)
echo "$BIN"
