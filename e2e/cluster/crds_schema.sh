#!/usr/bin/env bash
# crds_schema: the CRDs in crds/ install on a real kube-apiserver, become Established, accept a
# valid Mesh (with the schema's defaults filled in and the printer columns shown by kubectl get)
# and make the API server itself reject malformed objects with a message naming the bad field.
# kubectl runs with --validate=false so every rejection comes from the server's schema.
#
# The first run on a machine builds kube-apiserver (see kube.sh), ~5 min on 2 cores.
# shellcheck source=kube.sh
source "$(dirname "${BASH_SOURCE[0]}")/kube.sh"
kube_init crds_schema 1400

CRDS=$KUBE_REPO_ROOT/crds
[[ -d "$CRDS" ]] || kube_fail "no CRD folder $CRDS"

kube_up

kube_step "kubectl apply -f crds/"
out=$(kube_kubectl apply -f "$CRDS" 2>&1) || kube_fail "kubectl apply -f $CRDS failed:"$'\n'"$out"
echo "$out" >&2
for crd in meshes.tunnelmesh.io meshpeers.tunnelmesh.io peerpolicies.tunnelmesh.io; do
  kube_wait 30 "CRD $crd to be Established" \
    kube_kubectl wait --for=condition=Established --timeout=5s "crd/$crd"
done
# The discovery cache of a fresh kubectl may lag the CRDs by a moment.
kube_wait 30 "kubectl to know the kind Mesh" kube_kubectl get meshes

# expect_accepted NAME YAML
expect_accepted() {
  local name=$1 yaml=$2 out
  out=$(kube_kubectl apply --validate=false -f - <<<"$yaml" 2>&1) ||
    kube_fail "$name was rejected, want accepted:"$'\n'"$out"$'\n'"--- object:"$'\n'"$yaml"
  kube_log "$name accepted: $out"
}

# expect_rejected NAME KIND/OBJECT YAML FIELD_ERE...: the server refuses the object, the message
# names every field (an extended regular expression: the 1.20 server writes a list item's field
# without its index, spec.ports.port, newer ones spec.ports[0].port), and the object does not exist afterwards.
expect_rejected() {
  local name=$1 object=$2 yaml=$3 out field
  shift 3
  if out=$(kube_kubectl apply --validate=false -f - <<<"$yaml" 2>&1); then
    kube_fail "$name was accepted, want rejected:"$'\n'"$out"$'\n'"--- object:"$'\n'"$yaml"
  fi
  for field in "$@"; do
    grep -qE "$field" <<<"$out" ||
      kube_fail "$name: the rejection does not name '$field':"$'\n'"$out"
  done
  grep -qiE 'invalid|required|unsupported' <<<"$out" ||
    kube_fail "$name: the error is not a validation error:"$'\n'"$out"
  if kube_kubectl get "$object" >/dev/null 2>&1; then
    kube_fail "$name: $object exists although it was rejected"
  fi
  kube_log "$name rejected: $(tr '\n' ' ' <<<"$out")"
}

kube_step "a valid Mesh is accepted"
expect_accepted "valid Mesh" '
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: demo}
spec:
  ipv4CIDR: 10.99.0.0/16
  joinTokenSecretRef: {namespace: tunnelmesh, name: demo-join, key: token}'
got=$(kube_kubectl get mesh demo -o jsonpath='{.spec.ipv4CIDR} {.spec.defaultAction} {.spec.domain} {.spec.joinTokenMaxMembers}')
[[ "$got" == "10.99.0.0/16 Deny mesh 0" ]] ||
  kube_fail "Mesh demo reads back as '$got', want '10.99.0.0/16 Deny mesh 0' (with defaults)"

kube_step "kubectl get meshes shows the printer columns"
out=$(kube_kubectl get meshes 2>&1) || kube_fail "kubectl get meshes failed:"$'\n'"$out"
echo "$out" >&2
header=$(head -n1 <<<"$out")
for col in NAME IPV4 IPV6 DOMAIN MEMBERS READY AGE; do
  [[ " $header " =~ [[:space:]]${col}[[:space:]] ]] ||
    kube_fail "kubectl get meshes has no column $col:"$'\n'"$out"
done
row=$(grep '^demo ' <<<"$out") || kube_fail "kubectl get meshes does not list demo:"$'\n'"$out"
[[ "$row" == *10.99.0.0/16* && "$row" == *" mesh "* ]] ||
  kube_fail "the demo row lacks its IPv4 range or domain: '$row'"

kube_step "malformed objects are rejected by the API server"
expect_rejected "Mesh with ipv4CIDR not-a-cidr" mesh/bad-cidr '
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: bad-cidr}
spec:
  ipv4CIDR: not-a-cidr
  joinTokenSecretRef: {namespace: tunnelmesh, name: demo-join, key: token}' 'spec\.ipv4CIDR'

expect_rejected "Mesh with defaultAction Maybe" mesh/bad-action '
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: bad-action}
spec:
  ipv4CIDR: 10.98.0.0/16
  defaultAction: Maybe
  joinTokenSecretRef: {namespace: tunnelmesh, name: demo-join, key: token}' 'spec\.defaultAction'

expect_rejected "Mesh with joinTokenMaxMembers -1" mesh/bad-cap '
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: bad-cap}
spec:
  ipv4CIDR: 10.98.0.0/16
  joinTokenMaxMembers: -1
  joinTokenSecretRef: {namespace: tunnelmesh, name: demo-join, key: token}' 'spec\.joinTokenMaxMembers'

expect_rejected "Mesh without ipv4CIDR" mesh/no-cidr '
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: no-cidr}
spec:
  joinTokenSecretRef: {namespace: tunnelmesh, name: demo-join, key: token}' 'spec\.ipv4CIDR'

expect_rejected "PeerPolicy with action Perhaps and port 70000" peerpolicy/bad-policy '
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: bad-policy}
spec:
  mesh: demo
  action: Perhaps
  from: [{peerSelector: {matchLabels: {role: web}}}]
  to: [{peerSelector: {matchLabels: {role: db}}}]
  ports: [{protocol: TCP, port: 70000}]' 'spec\.action' 'spec\.ports(\[0\])?\.port'

expect_rejected "MeshPeer with kind Toaster" meshpeer/toaster '
apiVersion: tunnelmesh.io/v1alpha1
kind: MeshPeer
metadata: {name: toaster}
spec:
  mesh: demo
  kind: Toaster' 'spec\.kind'

expect_rejected "MeshPeer with useExitPeer as a bare name and sshPort 0" meshpeer/bad-exit '
apiVersion: tunnelmesh.io/v1alpha1
kind: MeshPeer
metadata: {name: bad-exit}
spec:
  mesh: demo
  kind: External
  useExitPeer: home-exit
  sshPort: 0' 'spec\.useExitPeer' 'spec\.sshPort'

kube_step "a valid PeerPolicy and MeshPeer are accepted"
expect_accepted "valid PeerPolicy" '
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: web-to-db}
spec:
  mesh: demo
  action: Allow
  from: [{peerSelector: {matchLabels: {role: web}}}]
  to: [{peerSelector: {matchLabels: {role: db}}}]
  ports: [{protocol: TCP, port: 5432}]'
expect_accepted "valid MeshPeer" '
apiVersion: tunnelmesh.io/v1alpha1
kind: MeshPeer
metadata: {name: laptop}
spec:
  mesh: demo
  kind: External
  useExitPeer: [home-exit, office-exit]'
expect_accepted "PeerPolicy with an internet destination" '
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: laptops-out}
spec:
  mesh: demo
  action: Allow
  from: [{peerSelector: {matchLabels: {role: laptop}}}]
  to: [{internet: {exitSelector: {matchLabels: {region: eu}}}}]'
