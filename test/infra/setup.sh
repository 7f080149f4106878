#!/usr/bin/env bash
# Builds or installs every real server the tests use, once per version.
# Binaries land in $TESTBED_CACHE/bin/<name>-<version>; a second run finds
# them and costs seconds. Go builds come from the module proxy (prebuilt
# release downloads are unreachable here); Mosquitto comes from Debian.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${TESTBED_CACHE:-$HOME/.cache/landfall}
bin=$cache/bin
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
ldflags_strip="-s -w"

say() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
timed() { local t0=$SECONDS; "$@"; say "  took $((SECONDS - t0)) s"; }

# build_into NAME VERSION CMD...: runs CMD with $out set to a temp path, then
# moves the result into place atomically so an interrupted build never leaves
# a half-written binary that later runs would trust.
build_into() {
  local name=$1 version=$2; shift 2
  local dest="$bin/$name-$version"
  if [ -x "$dest" ]; then say "$name $version: cached"; return; fi
  say "$name $version: building"
  out="$dest.tmp.$$"
  timed "$@"
  mv -f "$out" "$dest"
}

build_minio() {
  local gobin; gobin=$(mktemp -d)
  GOBIN=$gobin go install -ldflags "$ldflags_strip" "github.com/minio/minio@$MINIO_VERSION"
  mv "$gobin/minio" "$out"; rm -rf "$gobin"
}

build_helm() {
  local gobin; gobin=$(mktemp -d)
  GOBIN=$gobin go install -ldflags "$ldflags_strip -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  mv "$gobin/helm" "$out"; rm -rf "$gobin"
}

build_etcd() {
  (cd "$here/etcd" && go build -trimpath -ldflags "$ldflags_strip" -o "$out" .)
}

kube_ldflags() {
  local v=${KUBE_VERSION#v} major minor
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  local f="$ldflags_strip"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f="$f -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  printf '%s' "$f"
}

build_kube() { # $1 = command directory
  (cd "$here/kube" && go build -trimpath -ldflags "$(kube_ldflags)" -o "$out" "./cmd/$1")
}

install_mosquitto() {
  if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
    say "mosquitto: installed"; return
  fi
  say "mosquitto: apt-get install"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  timed bash -c "$sudo apt-get update -qq >/dev/null 2>&1 || true; $sudo apt-get install -y -qq mosquitto mosquitto-clients >/dev/null"
}

# The HTTPRoute CRD, from the Gateway API Go module (the proxy serves it;
# GitHub release downloads are unreachable here), into the cache.
install_gateway_api_crd() {
  local dest="$cache/gateway-api-$GATEWAY_API_VERSION/httproutes.yaml"
  if [ -s "$dest" ]; then say "gateway-api $GATEWAY_API_VERSION: cached"; return; fi
  say "gateway-api $GATEWAY_API_VERSION: go mod download"
  local dir
  dir=$(cd "$here/etcd" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$(dirname "$dest")"
  cp "$dir/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml" "$dest.tmp.$$"
  mv -f "$dest.tmp.$$" "$dest"
}

t_all=$SECONDS
only=${1:-all}
want() { [ "$only" = all ] || [ "$only" = "$1" ]; }
want mosquitto && install_mosquitto
want minio && build_into minio "$MINIO_VERSION" build_minio
want etcd && build_into etcd "$ETCD_VERSION" build_etcd
want kube && build_into kube-apiserver "$KUBE_VERSION" build_kube kube-apiserver
want kube && build_into kube-controller-manager "$KUBE_VERSION" build_kube kube-controller-manager
want kube && build_into kubectl "$KUBE_VERSION" build_kube kubectl
want helm && build_into helm "$HELM_VERSION" build_helm
want gateway-api && install_gateway_api_crd
say "test bed ready in $((SECONDS - t_all)) s (cache: $bin)"
