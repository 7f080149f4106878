#!/usr/bin/env bash
# Builds or installs every real server the tests use, once per version.
# Binaries land in $TESTBED_CACHE/bin/<name>-<version>; a second run finds
# them and costs seconds. Go builds come from the module proxy (prebuilt
# release downloads are unreachable here); Mosquitto, runc, iptables,
# docker.io and debootstrap come from Debian.
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
  # -e, not -x: some results are folders or tarballs, and mv is atomic either way.
  if [ -e "$dest" ]; then say "$name $version: cached"; return; fi
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

# --- The real node (test/harness/node.ts) ----------------------------------

# runc for containerd's shim, iptables for the CNI bridge, docker.io (dockerd)
# to build images exactly as a user would, debootstrap for a local base image.
install_node_debs() {
  local missing=() pkg
  # gcc + libc6-dev + binutils build the static pause; iproute2 and procps
  # (ip, sysctl) set up the node's bridge.
  for pkg in runc iptables docker.io debootstrap gcc libc6-dev binutils iproute2 procps; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} = 0 ]; then say "node debs: installed"; return; fi
  say "node debs: apt-get install ${missing[*]}"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  local t0=$SECONDS added_policy="" rc=0
  # policy-rc.d (exit 101) keeps the package from starting a system dockerd:
  # the harness starts its own, on its own socket, only while building images.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d; added_policy=1
  fi
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null || rc=$?
  [ -z "$added_policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
  say "  took $((SECONDS - t0)) s"
  return $rc
}

# containerd, its runc shim and ctr, in one folder: containerd finds the shim
# on PATH, so the harness puts this folder first on containerd's PATH.
build_containerd() {
  mkdir -p "$out"
  local m=github.com/containerd/containerd/v2
  GOBIN=$out go install -ldflags "$ldflags_strip -X $m/version.Version=$CONTAINERD_VERSION" \
    "$m/cmd/containerd@$CONTAINERD_VERSION" "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$m/cmd/ctr@$CONTAINERD_VERSION"
}

# The CNI reference plugins the node's bridge network uses (the kubelet's
# --cni-bin-dir is this folder).
build_cni_plugins() {
  mkdir -p "$out"
  local m=github.com/containernetworking/plugins/plugins
  GOBIN=$out go install -ldflags "$ldflags_strip" "$m/main/bridge@$CNI_PLUGINS_VERSION" \
    "$m/main/loopback@$CNI_PLUGINS_VERSION" "$m/ipam/host-local@$CNI_PLUGINS_VERSION" \
    "$m/meta/portmap@$CNI_PLUGINS_VERSION"
}

build_crictl() {
  local gobin; gobin=$(mktemp -d)
  GOBIN=$gobin go install -ldflags "$ldflags_strip -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  mv "$gobin/crictl" "$out"; rm -rf "$gobin"
}

# The pod sandbox ("pause") binary from the Kubernetes release's own pause.c,
# linked static so its image can be FROM scratch.
build_pause() {
  local dir
  dir=$(cd "$here/kube" && go mod download -json k8s.io/kubernetes | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  gcc -Os -Wall -Werror -static -DVERSION="$KUBE_VERSION" -o "$out" "$dir/build/pause/linux/pause.c"
  strip "$out"
}

# A Debian root filesystem (no registry is reachable for a base image): the
# harness imports it into dockerd and adds Node and npm on top.
build_debian_rootfs() {
  local root; root=$(mktemp -d)
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo debootstrap --variant=minbase "$DEBIAN_SUITE" "$root" http://deb.debian.org/debian >"$root.log" 2>&1 ||
    { tail -20 "$root.log" >&2; rm -rf "$root" "$root.log"; return 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root.log"
  tar -C "$root" --numeric-owner -cf "$out" .
  rm -rf "$root"
}

# CoreDNS for the node's cluster DNS (the harness runs it on the bridge
# address with the kubernetes plugin). Its go.mod has no replace directives,
# so a plain `go install` of the release works.
build_coredns() {
  local gobin; gobin=$(mktemp -d)
  GOBIN=$gobin go install -ldflags "$ldflags_strip" \
    "github.com/coredns/coredns@$COREDNS_VERSION"
  mv "$gobin/coredns" "$out"; rm -rf "$gobin"
}

fetch_npm() {
  local d; d=$(mktemp -d)
  (cd "$d" && npm pack --silent "npm@$NPM_VERSION" >/dev/null)
  mv "$d"/npm-*.tgz "$out"; rm -rf "$d"
}

# --- The Iceberg REST catalog and its reader (test/harness/iceberg.ts) ------

# Apache Iceberg's RESTCatalogServer and its runtime jars, as a folder of
# jars (java -cp '<dir>/lib/*'): Maven resolves test/infra/iceberg/pom.xml.
# The Iceberg part needs a JDK, Maven and Python's venv; install them from
# Debian only when the machine lacks them (these machines usually have all three).
install_iceberg_debs() {
  local missing=()
  command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} -eq 0 ]; then say "iceberg tools: installed"; return; fi
  say "iceberg tools: apt-get install ${missing[*]}"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  timed bash -c "$sudo apt-get update -qq >/dev/null 2>&1 || true; $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${missing[*]} >/dev/null"
}

fetch_iceberg_rest() {
  mkdir -p "$out/lib"
  mvn -B -q -Dstyle.color=never -f "$here/iceberg/pom.xml" -Diceberg.version="$ICEBERG_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/lib" >&2
  cp "$here/iceberg/pom.xml" "$out/pom.xml"
}

# PyIceberg and pyarrow from PyPI in their own venv (bin/python).
build_pyiceberg_venv() {
  python3 -m venv "$out"
  "$out/bin/pip" install -q --disable-pip-version-check \
    "pyiceberg[pyarrow]==$PYICEBERG_VERSION" "pyarrow==$PYARROW_VERSION" >&2
  # A venv's scripts name its folder: the .tmp path would not survive the move.
  local dest=${out%.tmp.*}
  grep -rlF "$out" "$out/bin" | xargs -r sed -i "s#$out#$dest#g"
}

t_all=$SECONDS
only=${1:-all}
want() { [ "$only" = all ] || [ "$only" = "$1" ]; }
case $only in all | mosquitto | minio | etcd | kube | helm | gateway-api | node | node-runtime | node-kube | coredns | iceberg) ;;
  *) say "unknown part $only (all | mosquitto | minio | etcd | kube | helm | gateway-api | node | node-runtime | node-kube | coredns | iceberg)"; exit 64 ;;
esac
want mosquitto && install_mosquitto
want minio && build_into minio "$MINIO_VERSION" build_minio
want etcd && build_into etcd "$ETCD_VERSION" build_etcd
want kube && build_into kube-apiserver "$KUBE_VERSION" build_kube kube-apiserver
want kube && build_into kube-controller-manager "$KUBE_VERSION" build_kube kube-controller-manager
want kube && build_into kubectl "$KUBE_VERSION" build_kube kubectl
want helm && build_into helm "$HELM_VERSION" build_helm
want gateway-api && install_gateway_api_crd
# node = node-runtime (no Kubernetes module) + node-kube (from the kube wrapper).
if want node || want node-runtime; then
  install_node_debs
  build_into containerd "$CONTAINERD_VERSION" build_containerd
  build_into cni-plugins "$CNI_PLUGINS_VERSION" build_cni_plugins
  build_into crictl "$CRICTL_VERSION" build_crictl
  build_into debian-rootfs "$DEBIAN_SUITE.tar" build_debian_rootfs
  build_into npm "$NPM_VERSION.tgz" fetch_npm
fi
# node also includes coredns (the node's cluster DNS); `setup.sh coredns` builds only it.
if want node || want coredns; then
  build_into coredns "$COREDNS_VERSION" build_coredns
fi
if want node || want node-kube; then
  build_into kube-scheduler "$KUBE_VERSION" build_kube kube-scheduler
  build_into kubelet "$KUBE_VERSION" build_kube kubelet
  build_into pause "$KUBE_VERSION" build_pause
fi
if want iceberg; then
  install_iceberg_debs
  build_into iceberg-rest "$ICEBERG_VERSION" fetch_iceberg_rest
  build_into pyiceberg "$PYICEBERG_VERSION-pyarrow-$PYARROW_VERSION" build_pyiceberg_venv
fi
say "test bed ready in $((SECONDS - t_all)) s (cache: $bin)"
