# cni_lib.sh: what the tests and benchmarks of tunnelmesh-cni share (source it after nat_lib.sh
# and tm_mesh_init).

TM_CNI_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# cni_lib_init: TM_CNI (the plugin: $TM_CNI, else tunnelmesh-cni beside the agent), RUNTIME
# (cni_runtime.py) and CNI_BIN, a plugin folder holding Debian's bridge and host-local and the
# plugin, as a runtime's CNI_PATH.
cni_lib_init() {
  TM_CNI=${TM_CNI:-$(dirname "$TM_AGENT")/tunnelmesh-cni}
  [[ -x "$TM_CNI" ]] || tm_fail "plugin binary '$TM_CNI' does not exist (ninja -C build tunnelmesh-cni)"
  local p
  for p in bridge host-local; do
    [[ -x /usr/lib/cni/$p ]] ||
      tm_fail "/usr/lib/cni/$p is missing (apt-get install containernetworking-plugins)"
  done
  RUNTIME=$TM_CNI_LIB_DIR/cni_runtime.py
  CNI_BIN=$TM_WORK/cni-bin
  mkdir -p "$CNI_BIN"
  ln -s /usr/lib/cni/bridge /usr/lib/cni/host-local "$CNI_BIN/"
  ln -s "$TM_CNI" "$CNI_BIN/tunnelmesh-cni"
}

# cni_two_nodes: a coordinator (namespace coord) and two nodes a and b that forward IPv4 and IPv6,
# with members alpha (on a) and beta (on b) made but not started.
cni_two_nodes() {
  tm_net_public coord
  tm_coord_setup coord
  tm_coord_start
  local node
  for node in a b; do
    tm_net_public "$node"
    tm_in "$node" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  done
  tm_member_new alpha a
  tm_member_new beta b
}
