#!/usr/bin/env bash
# helm_chart: the chart in charts/tunnelmesh lints clean, renders for every Service type, and its
# values.schema.json rejects bad values naming the key; then, against a real kube-apiserver (no
# nodes, so nothing becomes ready and nothing is waited for), `helm install` creates every object,
# `helm upgrade` keeps the join token, the operator's ServiceAccount has exactly the access the
# chart promises (checked with `kubectl auth can-i --as`), with and without dns.configureCoreDNS,
# the agent's has none, and `helm uninstall` removes the release but leaves the CRDs. (The
# operator's CoreDNS configuration itself, and the uninstall hook, are coredns.sh's.)
#
# Needs helm v4 (scripts/get-kube-tools.sh, run by scripts/install-deps.sh).
# shellcheck source=kube.sh
source "$(dirname "${BASH_SOURCE[0]}")/kube.sh"
kube_init helm_chart 1200

CHART=$KUBE_REPO_ROOT/charts/tunnelmesh
NS=tunnelmesh
REL=tunnelmesh # release name; contains the chart name, so every object is prefixed "tunnelmesh"
OP_SA=system:serviceaccount:$NS:$REL-operator
AGENT_SA=system:serviceaccount:$NS:$REL-agent
[[ -f "$CHART/Chart.yaml" ]] || kube_fail "no chart at $CHART"
[[ "$(helm version --short 2>/dev/null)" == v4.* ]] ||
  kube_fail "helm v4 is not installed (run scripts/install-deps.sh or scripts/get-kube-tools.sh)"

# helm logs an INFO line on stderr for the crds symlink; keep it out of compared output.
helm_quiet() { helm "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

# ---------------------------------------------------------------------------------------------
# Offline: lint, render, schema

kube_step "helm lint --strict"
out=$(helm lint --strict "$CHART" 2>&1) || kube_fail "helm lint --strict failed:"$'\n'"$out"
grep -qE '\[(WARNING|ERROR)\]' <<<"$out" && kube_fail "helm lint reports problems:"$'\n'"$out"
grep -q '0 chart(s) failed' <<<"$out" || kube_fail "unexpected helm lint output:"$'\n'"$out"

# render NAME ARGS...: helm template into $KUBE_WORK/NAME.yaml (with the CRDs) and NAME.json.
render() {
  local name=$1 out
  shift
  out=$(helm template "$REL" "$CHART" -n "$NS" --include-crds "$@" 2>&1 >"$KUBE_WORK/$name.yaml") ||
    kube_fail "helm template ($name: $*) failed:"$'\n'"$out"
  to_json "$KUBE_WORK/$name.yaml" >"$KUBE_WORK/$name.json" ||
    kube_fail "kubectl cannot read what helm template ($name: $*) rendered"
}

# to_json FILE: the objects of a rendered manifest as one JSON array. kubectl converts YAML to JSON
# without a server (--local), one document per object; they are joined here.
to_json() {
  kubectl annotate --local -f "$1" tunnelmesh.io/rendered=1 -o json | python3 -c '
import json, sys
text, dec, objs, i = sys.stdin.read(), json.JSONDecoder(), [], 0
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i == len(text):
        break
    obj, i = dec.raw_decode(text, i)
    objs.extend(obj["items"] if obj.get("kind") == "List" else [obj])
json.dump(objs, sys.stdout)'
}

# service_ports NAME: the rendered Service's type, then "name port protocol nodePort" per port.
service_ports() {
  python3 - "$KUBE_WORK/$1.json" <<'EOF'
import json, sys
for o in json.load(open(sys.argv[1])):
    if o["kind"] == "Service":
        print(o["spec"].get("type", "ClusterIP"))
        for p in o["spec"]["ports"]:
            print(p["name"], p["port"], p.get("protocol", "NONE"), p.get("nodePort", "-"))
EOF
}

kube_step "helm template: defaults, NodePort, LoadBalancer"
render default
render nodeport --set service.type=NodePort --set service.nodePorts.grpc=30700 \
  --set service.externalTrafficPolicy=Local
render lb --set service.type=LoadBalancer --set service.loadBalancerIP=203.0.113.7 \
  --set-string 'service.annotations.example\.com/lb=internal'
want_ports=$'grpc 7700 TCP\nstun 3478 UDP\nrelay 7701 TCP\ndns-udp 53 UDP\ndns-tcp 53 TCP'
declare -A want_type=([default]=ClusterIP [nodeport]=NodePort [lb]=LoadBalancer)
for name in default nodeport lb; do
  ports=$(service_ports "$name")
  [[ "${ports%%$'\n'*}" == "${want_type[$name]}" ]] ||
    kube_fail "$name: the Service is of type '${ports%%$'\n'*}', want ${want_type[$name]}"
  got=$(tail -n +2 <<<"$ports" | cut -d' ' -f1-3)
  [[ "$got" == "$want_ports" ]] ||
    kube_fail "$name: Service ports are"$'\n'"$got"$'\n'"want (every one with its protocol)"$'\n'"$want_ports"
done
ports=$(service_ports nodeport)
grep -qx 'grpc 7700 TCP 30700' <<<"$ports" ||
  kube_fail "service.nodePorts.grpc=30700 is not the grpc port's nodePort:"$'\n'"$ports"
grep -q 'externalTrafficPolicy: Local' "$KUBE_WORK/nodeport.yaml" ||
  kube_fail "service.externalTrafficPolicy=Local is not rendered"
grep -q 'externalTrafficPolicy' "$KUBE_WORK/default.yaml" &&
  kube_fail "a ClusterIP Service must not set externalTrafficPolicy"
grep -q 'loadBalancerIP: "203.0.113.7"' "$KUBE_WORK/lb.yaml" ||
  kube_fail "service.loadBalancerIP is not rendered"
grep -q 'example.com/lb: internal' "$KUBE_WORK/lb.yaml" ||
  kube_fail "service.annotations are not rendered"
n=$(grep -c '^kind: CustomResourceDefinition' "$KUBE_WORK/default.yaml" || true)
(( n == 3 )) || kube_fail "helm template --include-crds gives $n CRDs, want 3 (is charts/tunnelmesh/crds -> ../../crds intact?)"

kube_step "helm template: dns.configureCoreDNS adds one Role in kube-system, a Service rule and the hook"
render dnsoff
render dnson --set dns.configureCoreDNS=true
python3 - "$KUBE_WORK/dnsoff.json" "$KUBE_WORK/dnson.json" <<'EOF' || kube_fail "the CoreDNS objects of the chart are wrong"
import json, sys
off, on = (json.load(open(f)) for f in sys.argv[1:3])
def find(objs, kind, ns=None):
    return [o for o in objs if o["kind"] == kind and (ns is None or o["metadata"].get("namespace") == ns)]
def command(objs, kind):
    return find(objs, kind)[0]["spec"]["template"]["spec"]["containers"][0]["command"]
def services_rules(objs):
    role = [r for r in find(objs, "Role", "tunnelmesh") if r["metadata"]["name"] == "tunnelmesh-operator"][0]
    return [r for r in role["rules"] if "services" in r["resources"]]
assert not [o for o in off if o["metadata"].get("namespace") == "kube-system"], "kube-system objects when off"
assert [j["metadata"]["name"] for j in find(off, "Job")] == ["tunnelmesh-mesh-cleanup"], "hook Jobs when off"
assert not services_rules(off), "a Service rule when off"
assert "--configure-coredns" not in command(off, "Deployment")
cmd = command(on, "Deployment")
i = cmd.index("--configure-coredns")
assert cmd[i:i + 7] == ["--configure-coredns", "--coredns-configmap", "kube-system/coredns",
                        "--dns-service", "tunnelmesh", "--release", "tunnelmesh"], cmd
assert cmd[cmd.index("--dns-port") + 1] == "7753", cmd
roles = find(on, "Role", "kube-system")
assert len(roles) == 1 and roles[0]["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
    "resourceNames": ["coredns"], "verbs": ["get", "update"]}], roles
binding = find(on, "RoleBinding", "kube-system")
assert len(binding) == 1 and binding[0]["subjects"] == [{"kind": "ServiceAccount",
    "name": "tunnelmesh-operator", "namespace": "tunnelmesh"}], binding
assert services_rules(on) == [{"apiGroups": [""], "resources": ["services"],
    "resourceNames": ["tunnelmesh"], "verbs": ["get", "patch"]}], services_rules(on)
job = [j for j in find(on, "Job") if j["metadata"]["name"] == "tunnelmesh-coredns-cleanup"]
assert len(job) == 1, job
ann = job[0]["metadata"]["annotations"]
assert ann["helm.sh/hook"] == "pre-delete", ann
assert set(ann["helm.sh/hook-delete-policy"].split(",")) == {"before-hook-creation", "hook-succeeded"}, ann
spec = job[0]["spec"]["template"]["spec"]
assert spec["serviceAccountName"] == "tunnelmesh-operator" and spec["restartPolicy"] == "Never"
assert spec["containers"][0]["command"][:3] == ["/usr/bin/tunnelmesh-operator", "coredns", "--remove"]
ports = {p["name"]: (p["containerPort"], p["protocol"])
         for p in find(on, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["ports"]}
assert ports["dns-udp"] == (7753, "UDP") and ports["dns-tcp"] == (7753, "TCP"), ports
EOF
render dnscm --set dns.configureCoreDNS=true --set dns.coreDNSConfigMap.namespace=dns \
  --set dns.coreDNSConfigMap.name=rke2-coredns
if ! grep -q '"dns/rke2-coredns"' "$KUBE_WORK/dnscm.yaml" ||
  ! grep -q 'namespace: dns$' "$KUBE_WORK/dnscm.yaml" ||
  ! grep -q 'resourceNames: \["rke2-coredns"\]' "$KUBE_WORK/dnscm.yaml"; then
  kube_fail "dns.coreDNSConfigMap does not reach the flags, the Role and the hook"
fi
# NOTES.txt (rendered by install --dry-run, not by template) prints the stanza to add by hand, with
# the keys the operator writes: the domain and the reverse zones rounded to whole labels.
out=$(helm_quiet install "$REL" "$CHART" -n "$NS" --dry-run=client --set mesh.domain=corp.example \
  --set mesh.ipv4CIDR=10.98.0.0/20 --set mesh.ipv6CIDR=fd99:99::/48 2>&1) ||
  kube_fail "helm install --dry-run failed:"$'\n'"$out"
if ! grep -qx '    corp.example:53 98.10.in-addr.arpa:53 0.0.0.0.9.9.0.0.9.9.d.f.ip6.arpa:53 {' <<<"$out" ||
  ! grep -qx '        forward . CLUSTER_IP:53' <<<"$out"; then
  kube_fail "NOTES.txt does not print the CoreDNS stanza:"$'\n'"$out"
fi

kube_step "helm template: a join-token Secret in another namespace gets its own read-only Role; the token's cap"
render othertoken --set mesh.joinTokenSecret.name=corp-join --set mesh.joinTokenSecret.namespace=vault \
  --set mesh.joinTokenMaxMembers=40
python3 - "$KUBE_WORK/othertoken.json" <<'EOF' || kube_fail "the Role for the join token in namespace vault is wrong"
import json, sys
objs = json.load(open(sys.argv[1]))
kinds = [o["kind"] for o in objs]
assert "Secret" not in kinds, "the chart must not create a Secret when mesh.joinTokenSecret.name is set"
mesh = [o for o in objs if o["kind"] == "Mesh"][0]
assert mesh["spec"]["joinTokenSecretRef"] == {"namespace": "vault", "name": "corp-join", "key": "token"}, mesh["spec"]
assert mesh["spec"]["joinTokenMaxMembers"] == 40, mesh["spec"]
roles = [o for o in objs if o["kind"] == "Role" and o["metadata"]["namespace"] == "vault"]
assert len(roles) == 1, roles
assert roles[0]["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                              "resourceNames": ["corp-join"], "verbs": ["get"]}], roles[0]["rules"]
assert any(o["kind"] == "RoleBinding" and o["metadata"]["namespace"] == "vault" for o in objs)
EOF

# expect_schema_error DESCRIPTION KEY_PATH ARGS...: helm refuses the values, naming the key.
expect_schema_error() {
  local desc=$1 key=$2 out
  shift 2
  if out=$(helm_quiet template "$REL" "$CHART" -n "$NS" "$@" 2>&1); then
    kube_fail "$desc was accepted, want a schema error"
  fi
  grep -q "values don't meet the specifications of the schema" <<<"$out" ||
    kube_fail "$desc: not a schema error:"$'\n'"$out"
  grep -qF "$key" <<<"$out" || kube_fail "$desc: the error does not name '$key':"$'\n'"$out"
  kube_log "$desc rejected: $(grep -F "$key" <<<"$out" | head -n1 | sed 's/^ *//')"
}

kube_step "helm template: cni.enabled adds the installer container, its host folders and the pod rule"
render cni --set cni.enabled=true --set cni.binDir=/usr/libexec/cni --set mesh.name=lab
python3 - "$KUBE_WORK/default.json" "$KUBE_WORK/cni.json" <<'EOF' || kube_fail "the CNI objects of the chart are wrong"
import json, sys
off, on = (json.load(open(f)) for f in sys.argv[1:3])
def pod_spec(objs):
    return [o for o in objs if o["kind"] == "DaemonSet"][0]["spec"]["template"]["spec"]
def pod_rules(objs):
    role = [o for o in objs if o["kind"] == "ClusterRole"][0]
    return [r for r in role["rules"] if "pods" in r["resources"]]
assert [c["name"] for c in pod_spec(off)["containers"]] == ["agent"], "an installer when off"
assert not pod_rules(off), "the operator may read pods cluster-wide when cni is off"
spec = pod_spec(on)
installer = [c for c in spec["containers"] if c["name"] == "cni-installer"][0]
assert installer["command"] == ["/usr/bin/tunnelmesh-cni", "install", "--conf-dir", "/host/cni/net.d",
    "--bin-dir", "/host/cni/bin", "--mesh", "lab", "--agent-socket", "/var/lib/tunnelmesh/tm0.sock",
    "--pod-interface", "mesh0"], installer["command"]
assert installer["securityContext"]["capabilities"] == {"drop": ["ALL"]}, installer["securityContext"]
paths = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
assert paths["cni-bin"] == "/usr/libexec/cni" and paths["cni-conf"] == "/etc/cni/net.d", paths
assert pod_rules(on) == [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get"]}], pod_rules(on)
EOF
kube_log "cni.enabled: a cni-installer container with the node's CNI folders; the operator may get pods and namespaces"

kube_step "values.schema.json rejects bad values"
expect_schema_error "service.type=Foo" "/service/type" --set service.type=Foo
expect_schema_error "operator.grpcPort=70000" "/operator/grpcPort" --set operator.grpcPort=70000
expect_schema_error "agent.listenPort=0" "/agent/listenPort" --set agent.listenPort=0
expect_schema_error "mesh.ipv4CIDR=10.0.0/8" "/mesh/ipv4CIDR" --set mesh.ipv4CIDR=10.0.0/8
expect_schema_error "mesh.ipv6CIDR=fd00::/48x" "/mesh/ipv6CIDR" --set mesh.ipv6CIDR=fd00::/48x
expect_schema_error "operator.logLevel=loud" "/operator/logLevel" --set operator.logLevel=loud
expect_schema_error "image.pullPolicy=Sometimes" "/image/pullPolicy" --set image.pullPolicy=Sometimes
expect_schema_error "mesh.defaultAction=Maybe" "/mesh/defaultAction" --set mesh.defaultAction=Maybe
expect_schema_error "mesh.joinTokenMaxMembers=-1" "/mesh/joinTokenMaxMembers" --set mesh.joinTokenMaxMembers=-1
expect_schema_error "an unknown top-level key" "'replicaCount'" --set replicaCount=2
expect_schema_error "an unknown nested key" "'grpcport'" --set operator.grpcport=7700
expect_schema_error "operator.replicas=two" "/operator/replicas" --set-string operator.replicas=two
expect_schema_error "operator.dnsPort=0" "/operator/dnsPort" --set operator.dnsPort=0
expect_schema_error "dns.configureCoreDNS=yes" "/dns/configureCoreDNS" --set-string dns.configureCoreDNS=yes
expect_schema_error "dns.coreDNSConfigMap.namespace=Kube_System" "/dns/coreDNSConfigMap/namespace" \
  --set dns.coreDNSConfigMap.namespace=Kube_System
expect_schema_error "cni.binDir=opt/cni/bin" "/cni/binDir" --set cni.binDir=opt/cni/bin
expect_schema_error "cni.podInterface=a-very-long-interface" "/cni/podInterface" \
  --set cni.podInterface=a-very-long-interface

# ---------------------------------------------------------------------------------------------
# Online: a real API server

kube_up

kube_step "helm install $REL -n $NS --create-namespace"
start=$(kube__now_ms)
out=$(helm_quiet install "$REL" "$CHART" -n "$NS" --create-namespace --timeout 120s 2>&1) ||
  kube_fail "helm install failed:"$'\n'"$out"
kube_log "helm install took $(( $(kube__now_ms) - start )) ms"
grep -q 'kubectl -n tunnelmesh get configmap tunnelmesh-ca' <<<"$out" ||
  kube_fail "NOTES.txt does not tell how to read the CA hash:"$'\n'"$out"
grep -q 'tunnelmesh-agent join ADDRESS --token-file' <<<"$out" ||
  kube_fail "NOTES.txt does not tell how to join an outside machine:"$'\n'"$out"

for crd in meshes.tunnelmesh.io meshpeers.tunnelmesh.io peerpolicies.tunnelmesh.io; do
  kube_wait 30 "CRD $crd to be Established" \
    kube_kubectl wait --for=condition=Established --timeout=5s "crd/$crd"
done

kube_step "every object exists"
for obj in deployment/$REL-operator daemonset/$REL-agent service/$REL \
  serviceaccount/$REL-operator serviceaccount/$REL-agent role/$REL-operator \
  rolebinding/$REL-operator secret/$REL-join-token; do
  kube_kubectl -n "$NS" get "$obj" >/dev/null 2>&1 || kube_fail "$obj does not exist in $NS"
done
for obj in clusterrole/$REL-operator-$NS clusterrolebinding/$REL-operator-$NS mesh/default; do
  kube_kubectl get "$obj" >/dev/null 2>&1 || kube_fail "$obj does not exist"
done
got=$(kube_kubectl get mesh default -o jsonpath='{.spec.ipv4CIDR} {.spec.defaultAction} {.spec.domain} {.spec.joinTokenSecretRef.namespace}/{.spec.joinTokenSecretRef.name}/{.spec.joinTokenSecretRef.key}')
[[ "$got" == "10.99.0.0/16 Deny mesh $NS/$REL-join-token/token" ]] ||
  kube_fail "Mesh default reads '$got'"
got=$(kube_kubectl -n "$NS" get service "$REL" \
  -o jsonpath='{.spec.type}{range .spec.ports[*]} {.name}/{.port}/{.protocol}{end}')
[[ "$got" == "ClusterIP grpc/7700/TCP stun/3478/UDP relay/7701/TCP dns-udp/53/UDP dns-tcp/53/TCP" ]] ||
  kube_fail "Service $REL reads '$got'"
got=$(kube_kubectl -n "$NS" get daemonset "$REL-agent" -o jsonpath='{.spec.template.spec.hostNetwork} {.spec.template.spec.dnsPolicy} {.spec.template.spec.containers[0].securityContext.capabilities.add} {.spec.template.spec.containers[0].securityContext.privileged} {.spec.template.spec.containers[0].env[?(@.name=="TUNNELMESH_COORDINATOR")].value}')
[[ "$got" == "true ClusterFirstWithHostNet [\"NET_ADMIN\"]  $REL.$NS.svc:7700" ]] ||
  kube_fail "DaemonSet $REL-agent reads '$got'"
# Finding 15 and 10 of the security review: the runtime's seccomp profile, no API token in the
# pod, and a projected token for audience tunnelmesh, which --kubernetes-token-file names.
got=$(kube_kubectl -n "$NS" get daemonset "$REL-agent" -o jsonpath='{.spec.template.spec.securityContext.seccompProfile.type} {.spec.template.spec.automountServiceAccountToken} {.spec.template.spec.volumes[?(@.name=="coordinator-token")].projected.sources[0].serviceAccountToken.audience} {.spec.template.spec.volumes[?(@.name=="coordinator-token")].projected.sources[0].serviceAccountToken.expirationSeconds} {.spec.template.spec.containers[0].volumeMounts[?(@.name=="coordinator-token")].mountPath}')
[[ "$got" == "RuntimeDefault false tunnelmesh 3600 /var/run/secrets/tunnelmesh" ]] ||
  kube_fail "DaemonSet $REL-agent's token and seccomp settings read '$got'"
got=$(kube_kubectl -n "$NS" get daemonset "$REL-agent" -o jsonpath='{.spec.template.spec.containers[0].command}')
[[ "$got" == *'"--kubernetes-token-file","/var/run/secrets/tunnelmesh/token"'* ]] ||
  kube_fail "the agent's command does not read the projected token: $got"
[[ "$got" == *'"--ssh-port","7722"'* ]] || kube_fail "the agent's command lacks --ssh-port 7722: $got"
got=$(kube_kubectl -n "$NS" get daemonset "$REL-agent" -o jsonpath='{.spec.template.spec.containers[0].ports[?(@.name=="ssh")].containerPort}')
[[ "$got" == 7722 ]] || kube_fail "the agent's containerPort ssh is '$got', want 7722"
render nossh --set agent.ssh.enabled=false
grep -q -- '- --no-ssh' "$KUBE_WORK/nossh.yaml" || kube_fail "agent.ssh.enabled=false does not pass --no-ssh"
grep -q -- '--ssh-port\|name: ssh$' "$KUBE_WORK/nossh.yaml" &&
  kube_fail "agent.ssh.enabled=false still passes --ssh-port or declares the ssh port"
got=$(kube_kubectl -n "$NS" get role "$REL-operator" -o json | python3 -c '
import json, sys
rules = json.load(sys.stdin)["rules"]
print(" ".join(sorted(v for r in rules if "pods" in r["resources"] for v in r["verbs"])))')
[[ "$got" == "get patch" ]] ||
  kube_fail "the operator's Role allows '$got' on pods (want get, and patch for its own pod's label)"
got=$(kube_kubectl -n "$NS" get deployment "$REL-operator" -o jsonpath='{.spec.template.spec.containers[0].command}')
# shellcheck disable=SC2016 # $(POD_NAMESPACE) is literal: the kubelet expands it
for arg in '"--lease-name","tunnelmesh-operator"' '"--coordinator-secret","tunnelmesh-coordinator"' \
  '"--ca-configmap","tunnelmesh-ca"' '"--agent-service-account","$(POD_NAMESPACE)/tunnelmesh-agent"' \
  '"--grpc-port","7700"' '"--stun-port","3478"' '"--relay-port","7701"' '"--dns-port","7753"' \
  '"--log-level","info"'; do
  [[ "$got" == *"$arg"* ]] || kube_fail "the operator's command lacks $arg: $got"
done

kube_step "the schema's CIDR patterns are the Mesh CRD's"
for field in ipv4CIDR ipv6CIDR; do
  crd=$(kube_kubectl get crd meshes.tunnelmesh.io \
    -o jsonpath="{.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.$field.pattern}")
  python3 - "$CHART/values.schema.json" "$field" "$crd" <<'EOF' ||
import json, sys
schema, field, crd = sys.argv[1], sys.argv[2], sys.argv[3]
ours = json.load(open(schema))["properties"]["mesh"]["properties"][field]["pattern"]
# The optional field wraps the CRD's pattern as ^(...)?$ so that "" passes.
if ours not in (crd, "^(" + crd[1:-1] + ")?$"):
    sys.exit(f"values.schema.json mesh.{field} pattern {ours!r} differs from the CRD's {crd!r}")
EOF
    kube_fail "values.schema.json and crds/mesh.yaml disagree on $field"
done

kube_step "helm upgrade keeps the join token"
token=$(kube_kubectl -n "$NS" get secret "$REL-join-token" -o jsonpath='{.data.token}' | base64 -d)
(( ${#token} >= 32 )) || kube_fail "the join token has ${#token} characters, want at least 32"
out=$(helm_quiet upgrade "$REL" "$CHART" -n "$NS" --set operator.logLevel=debug --timeout 120s 2>&1) ||
  kube_fail "helm upgrade failed:"$'\n'"$out"
after=$(kube_kubectl -n "$NS" get secret "$REL-join-token" -o jsonpath='{.data.token}' | base64 -d)
[[ "$after" == "$token" ]] || kube_fail "helm upgrade changed the join token"
got=$(kube_kubectl -n "$NS" get deployment "$REL-operator" -o jsonpath='{.spec.template.spec.containers[0].command}')
[[ "$got" == *'"--log-level","debug"'* ]] || kube_fail "the upgrade did not reach the Deployment: $got"
[[ "$(helm status "$REL" -n "$NS" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')" == 2 ]] ||
  kube_fail "the release is not at revision 2 after the upgrade"

kube_step "deleting the join-token Secret and upgrading rotates the token (docs/helm.md)"
kube_kubectl -n "$NS" delete secret "$REL-join-token" >/dev/null
out=$(helm_quiet upgrade "$REL" "$CHART" -n "$NS" --reuse-values --timeout 120s 2>&1) ||
  kube_fail "helm upgrade after deleting the join-token Secret failed:"$'\n'"$out"
rotated=$(kube_kubectl -n "$NS" get secret "$REL-join-token" -o jsonpath='{.data.token}' | base64 -d)
if (( ${#rotated} < 32 )) || [[ "$rotated" == "$token" ]]; then
  kube_fail "the join token was not re-created with a new value (${#rotated} characters)"
fi
got=$(kube_kubectl -n "$NS" get deployment "$REL-operator" -o jsonpath='{.spec.template.spec.containers[0].command}')
[[ "$got" == *'"--log-level","debug"'* ]] || kube_fail "--reuse-values lost operator.logLevel: $got"

# can AS ANSWER VERB RESOURCE [ARGS...]: kubectl auth can-i as AS answers ANSWER (yes or no).
can() {
  local as=$1 want=$2 got
  shift 2
  # The answer is on stdout; stderr may carry warnings (a cluster-scoped resource with -n).
  got=$(kube_kubectl auth can-i --as "$as" "$@" 2>"$KUBE_WORK/can-i.err") || true
  [[ "$got" == "$want" ]] ||
    kube_fail "can-i --as $as $*: '$got', want '$want' $(cat "$KUBE_WORK/can-i.err")"
}

kube_step "the operator's ServiceAccount: what it needs, nothing more"
can "$OP_SA" yes list meshpeers.tunnelmesh.io
can "$OP_SA" yes watch meshes.tunnelmesh.io
can "$OP_SA" yes delete meshpeers.tunnelmesh.io
can "$OP_SA" yes patch meshes.tunnelmesh.io
can "$OP_SA" yes update meshpeers.tunnelmesh.io --subresource status
can "$OP_SA" yes create tokenreviews.authentication.k8s.io
can "$OP_SA" yes list nodes
can "$OP_SA" yes create leases.coordination.k8s.io -n "$NS"
can "$OP_SA" yes update leases.coordination.k8s.io/$REL-operator -n "$NS"
can "$OP_SA" yes get secrets/$REL-join-token -n "$NS"
can "$OP_SA" yes update secrets/$REL-coordinator -n "$NS"
can "$OP_SA" yes update configmaps/$REL-ca -n "$NS"
can "$OP_SA" yes create events -n default
can "$OP_SA" no create events -n kube-system
can "$OP_SA" no update secrets/$REL-join-token -n "$NS"
can "$OP_SA" no get secrets/something-else -n "$NS"
can "$OP_SA" no list secrets -n "$NS"
can "$OP_SA" no get secrets -n default
can "$OP_SA" no update leases.coordination.k8s.io/$REL-operator -n default
can "$OP_SA" no delete meshes.tunnelmesh.io
can "$OP_SA" yes delete meshes.tunnelmesh.io/default
can "$OP_SA" no delete meshes.tunnelmesh.io/other
can "$OP_SA" yes patch pods -n "$NS"
can "$OP_SA" no patch pods -n default
can "$OP_SA" no create peerpolicies.tunnelmesh.io
can "$OP_SA" no delete nodes
can "$OP_SA" no create pods -n "$NS"
can "$OP_SA" no create pods -n default
can "$OP_SA" no get configmaps/coredns -n kube-system
can "$OP_SA" no update configmaps/coredns -n kube-system
can "$OP_SA" no get services/$REL -n "$NS"

kube_step "dns.configureCoreDNS=true: get and update of ConfigMap kube-system/coredns, nothing more"
out=$(helm_quiet upgrade "$REL" "$CHART" -n "$NS" --reuse-values --set dns.configureCoreDNS=true \
  --timeout 120s 2>&1) || kube_fail "helm upgrade --set dns.configureCoreDNS=true failed:"$'\n'"$out"
can "$OP_SA" yes get configmaps/coredns -n kube-system
can "$OP_SA" yes update configmaps/coredns -n kube-system
can "$OP_SA" no patch configmaps/coredns -n kube-system
can "$OP_SA" no delete configmaps/coredns -n kube-system
can "$OP_SA" no get configmaps/kube-proxy -n kube-system
can "$OP_SA" no list configmaps -n kube-system
can "$OP_SA" no create configmaps -n kube-system
can "$OP_SA" no get secrets -n kube-system
can "$OP_SA" no get configmaps/coredns -n default
can "$OP_SA" yes get services/$REL -n "$NS"
can "$OP_SA" yes patch services/$REL -n "$NS"
can "$OP_SA" no update services/$REL -n "$NS"
can "$OP_SA" no delete services/$REL -n "$NS"
can "$OP_SA" no get services/kubernetes -n default
can "$OP_SA" no list services -n "$NS"
can "$OP_SA" yes update configmaps/$REL-ca -n "$NS"
# Back to the default (the uninstall below would otherwise run the CoreDNS hook, which needs a
# kubelet: coredns.sh plays one).
out=$(helm_quiet upgrade "$REL" "$CHART" -n "$NS" --reuse-values --set dns.configureCoreDNS=false \
  --timeout 120s 2>&1) || kube_fail "helm upgrade --set dns.configureCoreDNS=false failed:"$'\n'"$out"
can "$OP_SA" no get configmaps/coredns -n kube-system
can "$OP_SA" no get services/$REL -n "$NS"
[[ -z "$(kube_kubectl get roles -n kube-system -l app.kubernetes.io/instance=$REL -o name)" ]] ||
  kube_fail "the CoreDNS Role stayed in kube-system after dns.configureCoreDNS=false"

kube_step "the agent's ServiceAccount: no Kubernetes permissions"
can "$AGENT_SA" no list meshpeers.tunnelmesh.io
can "$AGENT_SA" no get meshes.tunnelmesh.io
can "$AGENT_SA" no get secrets -n "$NS"
can "$AGENT_SA" no get secrets/$REL-join-token -n "$NS"
can "$AGENT_SA" no get configmaps -n "$NS"
can "$AGENT_SA" no create tokenreviews.authentication.k8s.io
can "$AGENT_SA" no get nodes

kube_step "helm uninstall removes the release and keeps the CRDs"
# --no-hooks: no kubelet runs the mesh-cleanup hook Job here (real_pods.sh runs it for real), and
# no operator ran, so the Mesh has no finalizer to wait for.
out=$(helm_quiet uninstall "$REL" -n "$NS" --no-hooks --timeout 120s 2>&1) ||
  kube_fail "helm uninstall failed:"$'\n'"$out"
[[ -z "$(helm list -n "$NS" -q)" ]] || kube_fail "helm list still shows a release after uninstall"
# release_gone: none of the release's objects is left (and the API server answered).
release_gone() {
  local left
  left=$(kube_kubectl get -n "$NS" --ignore-not-found -o name deployment/$REL-operator \
    daemonset/$REL-agent service/$REL secret/$REL-join-token serviceaccount/$REL-agent \
    role/$REL-operator rolebinding/$REL-operator) || return 1
  left+=$(kube_kubectl get --ignore-not-found -o name mesh/default clusterrole/$REL-operator-$NS \
    clusterrolebinding/$REL-operator-$NS) || return 1
  [[ -z "$left" ]] || { echo "still there: $left"; return 1; }
}
kube_wait 60 "the release's objects to be gone" release_gone
for crd in meshes.tunnelmesh.io meshpeers.tunnelmesh.io peerpolicies.tunnelmesh.io; do
  kube_kubectl get crd "$crd" >/dev/null 2>&1 || kube_fail "helm uninstall removed CRD $crd"
done
