#!/usr/bin/env bash
# Owns the machine-wide state of the test bed's real node (test/harness/node.ts):
# the lock that lets one node run per machine, and the clean-up of everything
# a kubelet and containerd leave outside their own folders.
#
#   node-reap.sh hold   take the lock (waiting up to $NODE_LOCK_WAIT_S), clean
#                       what a killed run left, print "locked", then wait for
#                       EOF on stdin (the test process ended, however it
#                       ended) and clean again; the lock goes with this process.
#   node-reap.sh clean  take the lock and clean once (by hand, after a crash).
#
# Everything here is fixed paths or names, so a later run can clean up after
# an earlier one that was SIGKILLed. Nothing here belongs to another kubelet
# (k3s, kubeadm) on the same machine: the cgroups are ours by name (never the
# root kubepods*), and the host-wide things any kubelet makes (its iptables
# chains, /var/lib/kubelet/device-plugins/kubelet.sock) are removed only if
# node.ts listed them in $state/host-owned before starting the kubelet.
set -uo pipefail

state=${NODE_STATE_DIR:?}        # kubelet root, containerd root, pod logs, PVs
run=${NODE_RUN_DIR:-/run/landfall-node} # sockets, containerd state, runc state, netns
bridge=${NODE_BRIDGE:-lfnode0}
cni_net=${NODE_CNI_NETWORK:-landfall-node}
docker_dir=${NODE_DOCKER_DIR:-}   # unmounted, never removed: it is a build cache
lock=${NODE_LOCK:-/run/landfall-node.lock}
wait_s=${NODE_LOCK_WAIT_S:-1800}
# The cgroup the harness puts containerd, kubelet and dockerd in (shims and
# dockerd's containerd inherit it), and the kubelet's cgroupRoot, under which
# it puts pods (landfall-node-pods/kubepods/...). Never the root kubepods.
cgroups=(landfall-node landfall-node-pods)
owned_file=$state/host-owned

log() { printf '[node-reap %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

owned() { [ -f "$owned_file" ] && grep -qxF "$1" "$owned_file"; }

other_kubelet_pods() { # a root kubepods/kubepods.slice cgroup with processes: another kubelet's pods
  local d
  for d in $(cgroup_dirs kubepods) $(cgroup_dirs kubepods.slice); do
    if [ -n "$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | head -c1)" ]; then
      printf '%s\n' "$d"
      return 0
    fi
  done
  return 1
}

cgroup_dirs() { # every hierarchy's copy of $1 (v1 has one per controller; v2 one)
  local h
  if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
    [ -d "/sys/fs/cgroup/$1" ] && printf '%s\n' "/sys/fs/cgroup/$1"
  else
    for h in /sys/fs/cgroup/*/; do
      [ -d "$h$1" ] && printf '%s\n' "$h$1"
    done
  fi
  return 0
}

kill_cgroup_tree() {
  local name=$1 i pids dir
  for i in $(seq 1 100); do
    pids=""
    while read -r dir; do
      pids+=" $(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | tr '\n' ' ')"
    done < <(cgroup_dirs "$name")
    pids=${pids//[[:space:]]/ }
    [ -z "${pids// /}" ] && return 0
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null
    sleep 0.1
  done
  log "processes still in cgroup $name after 10 s:$pids"
}

remove_cgroup_tree() {
  local dir
  while read -r dir; do
    find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
    [ -d "$dir" ] && log "could not remove cgroup $dir"
  done < <(cgroup_dirs "$1")
  return 0
}

unmount_under() { # every mount point at or under each given folder, deepest first
  local prefix mp
  for prefix in "$@"; do
    [ -n "$prefix" ] || continue
    awk '{print $5}' /proc/self/mountinfo | grep -E "^${prefix//./\\.}(/|$)" | sort -r | while read -r mp; do
      umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || log "could not unmount $mp"
    done
  done
}

clean() {
  local c rule
  for c in "${cgroups[@]}"; do kill_cgroup_tree "$c"; done
  unmount_under "$state" "$run" "$docker_dir"
  for c in "${cgroups[@]}"; do remove_cgroup_tree "$c"; done
  ip link del "$bridge" 2>/dev/null
  # The accept rule node.ts adds for pod-to-pod traffic when Docker made FORWARD's policy DROP.
  rule=(FORWARD -i "$bridge" -o "$bridge" -m comment --comment landfall-node -j ACCEPT)
  while iptables -C "${rule[@]}" 2>/dev/null; do iptables -D "${rule[@]}"; done
  # The DNAT of the kubernetes Service (node.ts), whatever port it pointed to.
  iptables -t nat -S PREROUTING 2>/dev/null | grep -- '--comment landfall-node' | sed 's/^-A /-D /' |
    while read -r line; do eval "iptables -t nat $line"; done
  # The kubelet's log symlinks always go to /var/log/containers: only ours (into $state).
  if [ -d /var/log/containers ]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$state/*" -delete 2>/dev/null
    rmdir /var/log/containers 2>/dev/null
  fi
  # Host-wide things any kubelet makes: only those node.ts recorded as ours
  # (absent before our kubelet started), and none while another kubelet's pods run.
  local other
  if other=$(other_kubelet_pods); then
    log "another kubelet's pods run ($other): leaving kubelet chains, device-plugin socket and cni-loopback results alone"
  else
    # The kubelet's chains (its canaries, and KUBE-FIREWALL that INPUT and OUTPUT jump to).
    local ipt t chain
    for ipt in iptables ip6tables; do
      command -v "$ipt" >/dev/null || continue
      if owned "$ipt filter KUBE-FIREWALL"; then
        for chain in INPUT OUTPUT; do
          while "$ipt" -C "$chain" -j KUBE-FIREWALL 2>/dev/null; do "$ipt" -D "$chain" -j KUBE-FIREWALL; done
        done
      fi
      for t in filter nat mangle; do
        for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
          owned "$ipt $t $chain" || continue
          "$ipt" -t "$t" -F "$chain" 2>/dev/null && "$ipt" -t "$t" -X "$chain" 2>/dev/null
        done
      done
    done
    # The device-plugin socket path is fixed whatever --root-dir says.
    if owned device-plugin-socket; then
      rm -f /var/lib/kubelet/device-plugins/kubelet.sock
      rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null
    fi
    # libcni's loopback results of our sandboxes: the ids of our own network's results.
    local f id
    for f in /var/lib/cni/results/"$cni_net"-*; do
      [ -e "$f" ] || continue
      id=${f#/var/lib/cni/results/"$cni_net"-}
      id=${id%-*}
      [ -n "$id" ] && rm -f /var/lib/cni/results/cni-loopback-"$id"-*
    done
  fi
  # dockerd's containerd (1.x) makes these empty folders.
  rmdir /opt/containerd/bin /opt/containerd/lib /opt/containerd 2>/dev/null
  # libcni's result cache has no per-runtime setting: our network's results
  # (their cni-loopback twins went above).
  rm -f /var/lib/cni/results/"$cni_net"-* 2>/dev/null
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null
  # Shim sockets live in /run/containerd/s whatever containerd's state dir is;
  # remove the ones nothing listens on any more (Docker's containerd shares it).
  if [ -d /run/containerd/s ]; then
    local s listening
    listening=$(awk 'NR > 1 && $8 != "" {print $8}' /proc/net/unix | sed 's/^@//')
    for s in /run/containerd/s/*; do
      [ -S "$s" ] || continue
      grep -qxF "$s" <<<"$listening" || rm -f "$s"
    done
    rmdir /run/containerd/s /run/containerd 2>/dev/null
  fi
  # --one-file-system: never follow a mount that would not come off into the host.
  rm -rf --one-file-system "$run" "$state"
  return 0
}

mkdir -p "$(dirname "$lock")"
exec 9>>"$lock"
if ! flock -w "$wait_s" 9; then
  log "another test bed node still holds $lock after ${wait_s} s"
  exit 75
fi
case ${1:-hold} in
  clean) clean ;;
  hold)
    clean
    echo locked
    # Until the test process ends (stop() or death closes our stdin).
    while read -r _; do :; done
    clean
    ;;
  *) log "usage: $0 hold|clean"; exit 64 ;;
esac
