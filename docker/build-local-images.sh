#!/bin/bash
# Build the Docker images the tests run, without any image registry: debootstrap + docker import + docker build.
# Each image is skipped when its tag exists. Needs root (debootstrap) and a running dockerd.
#
#   local/debian:bookworm-minbase, local/debian:sid-minbase    base images
#   ghcr.io/ggml-org/llama.cpp:server (= local/llama.cpp:server) a real llama-server (Debian sid llama.cpp-tools),
#                                                              tagged as the built-in llama.cpp backend's cpu image,
#                                                              with ggml-rpc-server and the RPC backend (distributed)
#   local/consul:1.8.7                                          Consul dev agent
#   local/nomadgs-downloader:hf-2.4.0                           Python + huggingface_hub for the prestart download
#   local/nomadgs:VERSION                                       nomadgs from this checkout's wheel (the gateway job)
#
# To build only your own nomadgs image: docker/build-local-images.sh nomadgs (needs local/debian:bookworm-minbase,
# which the script makes first, or edit docker/nomadgs/Dockerfile's FROM to any Debian bookworm image).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${CACHE:-$(dirname "$HERE")/.cache/docker-local}
HF_VERSION=2.4.0
LLAMA_TAGS=(ghcr.io/ggml-org/llama.cpp:server local/llama.cpp:server)
CONSUL_TAG=local/consul:1.8.7
DOWNLOADER_TAG=local/nomadgs-downloader:hf-$HF_VERSION
ROOT=$(dirname "$HERE")
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)
NOMADGS_TAG=local/nomadgs:$VERSION
mkdir -p "$CACHE"
# The Debian mirror apt already uses: deb822 sources first, then one-line sources.list.
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if [ -z "$MIRROR" ] && [ -r /etc/apt/sources.list ]; then
  MIRROR=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if($i ~ /^[a-z+]+:\/\//){print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$MIRROR" ] || { echo "no Debian mirror found in the apt configuration" >&2; exit 1; }

have() { docker image inspect "$1" >/dev/null 2>&1; }
# An llama.cpp image built before the RPC server was added to it is rebuilt, not kept.
have_llama() {
  have "$1" && docker run --rm --network none --entrypoint /bin/sh "$1" -c \
    'test -x /app/ggml-rpc-server && test -e /usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-rpc.so' >/dev/null 2>&1
}
step() { printf '%s %s\n' "$(date +%T)" "$*"; }

base() {  # base SUITE -> local/debian:SUITE-minbase
  local suite=$1 root="$CACHE/rootfs-$1"
  have "local/debian:$suite-minbase" && return 0
  command -v debootstrap >/dev/null || { apt-get update -q; apt-get install -y -q debootstrap; }
  step "debootstrap $suite"
  rm -rf "$root"
  debootstrap --variant=minbase "$suite" "$root" "$MIRROR" >"$CACHE/debootstrap-$suite.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap-$suite.log"; return 1; }
  # A frozen mirror snapshot has an expired Release "Valid-Until" for sid; debootstrap ignores it, apt does not.
  echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99no-valid-until"
  rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
  rm -rf "$root"/var/lib/apt/lists/*
  tar --numeric-owner -C "$root" -c . | docker import \
    --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "local/debian:$suite-minbase" >/dev/null
  rm -rf "$root"
}

build() {  # build TAG CONTEXT [more tags]
  local tag=$1 context=$2
  shift 2
  step "docker build $tag"
  # --force-rm: the legacy builder (no BuildKit here) leaves failed build containers behind otherwise; its
  # deprecation notice is dropped, every other line of stderr is kept.
  docker build --quiet --force-rm --network host -t "$tag" "${@/#/--tag=}" "$context" >/dev/null \
    2> >(grep -v -e 'legacy builder is deprecated' -e 'buildx component' -e 'docs.docker.com/go/buildx' \
         -e '^ *$' >&2)
}

# nomadgs from this checkout: its wheel and its dependencies' (for bookworm's Python 3.11, x86_64), fetched on
# the host like the downloader's. Rebuilt when the tag is missing or the sources changed since (a label).
nomadgs_image() {
  local sources context
  sources=$(cd "$ROOT" && cat pyproject.toml $(find nomad_gpustack -name '*.py' | sort) | sha256sum | cut -c1-16)
  [ "$(docker image inspect -f '{{index .Config.Labels "nomadgs.sources"}}' "$NOMADGS_TAG" 2>/dev/null)" = "$sources" ] \
    && return 0
  context="$CACHE/nomadgs-context"
  rm -rf "$context" && mkdir -p "$context/wheels"
  cp "$HERE/nomadgs/Dockerfile" "$context/"
  echo "LABEL nomadgs.sources=$sources" >> "$context/Dockerfile"
  step "pip wheel nomad-gpustack $VERSION"
  python3 -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$context/wheels" "$ROOT" >/dev/null
  python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: --dest "$context/wheels" \
    --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform linux_x86_64 \
    "$context"/wheels/nomad_gpustack-*.whl 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  build "$NOMADGS_TAG" "$context"
  rm -rf "$context"
}

if [ "${1:-}" = nomadgs ]; then
  base bookworm
  nomadgs_image
  exit 0
fi
base bookworm
base sid
have_llama "${LLAMA_TAGS[0]}" || build "${LLAMA_TAGS[0]}" "$HERE/llama" "${LLAMA_TAGS[@]:1}"
for tag in "${LLAMA_TAGS[@]:1}"; do have_llama "$tag" || docker tag "${LLAMA_TAGS[0]}" "$tag"; done
have "$CONSUL_TAG" || build "$CONSUL_TAG" "$HERE/consul"
if ! have "$DOWNLOADER_TAG"; then
  context="$CACHE/downloader-context"
  rm -rf "$context" && mkdir -p "$context/wheels"
  cp "$HERE/downloader/Dockerfile" "$context/"
  step "pip download huggingface_hub==$HF_VERSION"
  python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: --dest "$context/wheels" \
    "huggingface_hub==$HF_VERSION" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  build "$DOWNLOADER_TAG" "$context"
  rm -rf "$context"
fi
nomadgs_image
docker image prune -f >/dev/null   # the dangling multi-stage "fetch" image
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^(local/|ghcr.io/ggml-org/)' | sort
