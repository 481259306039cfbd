{{/*
Names shared by every template. The operator's flags, the agent's coordinator address and the
RBAC rules all refer to objects by these names, so they are computed in one place.
*/}}

{{/* tunnelmesh.name: the chart name, or nameOverride. */}}
{{- define "tunnelmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
tunnelmesh.fullname: the prefix of every object. The release name alone when it already contains
the chart name ("tunnelmesh"), else "<release>-<name>". Truncated to 40 characters so that the
longest derived name (<fullname>-coordinator, <fullname>-join-token) stays a valid DNS label.
*/}}
{{- define "tunnelmesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := include "tunnelmesh.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tunnelmesh.operatorName" -}}{{ include "tunnelmesh.fullname" . }}-operator{{- end }}
{{- define "tunnelmesh.agentName" -}}{{ include "tunnelmesh.fullname" . }}-agent{{- end }}
{{- define "tunnelmesh.caConfigMap" -}}{{ include "tunnelmesh.fullname" . }}-ca{{- end }}
{{- define "tunnelmesh.coordinatorSecret" -}}{{ include "tunnelmesh.fullname" . }}-coordinator{{- end }}

{{/* tunnelmesh.joinTokenSecretName: mesh.joinTokenSecret.name, or the Secret this chart makes. */}}
{{- define "tunnelmesh.joinTokenSecretName" -}}
{{- .Values.mesh.joinTokenSecret.name | default (printf "%s-join-token" (include "tunnelmesh.fullname" .)) }}
{{- end }}

{{/*
tunnelmesh.joinTokenSecretNamespace: mesh.joinTokenSecret.namespace for a named Secret, else the
release's (where the chart creates its own).
*/}}
{{- define "tunnelmesh.joinTokenSecretNamespace" -}}
{{- if .Values.mesh.joinTokenSecret.name }}
{{- .Values.mesh.joinTokenSecret.namespace | default .Release.Namespace }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* tunnelmesh.image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "tunnelmesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/* tunnelmesh.coordinatorAddress: where the in-cluster agents dial the coordinator. */}}
{{- define "tunnelmesh.coordinatorAddress" -}}
{{- if .Values.agent.coordinator }}
{{- .Values.agent.coordinator }}
{{- else }}
{{- printf "%s.%s.svc:%d" (include "tunnelmesh.fullname" .) .Release.Namespace (int .Values.operator.grpcPort) }}
{{- end }}
{{- end }}

{{/* tunnelmesh.labels: labels on every object; pass a dict with "ctx" (the root) and "component". */}}
{{- define "tunnelmesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "tunnelmesh.selectorLabels" . }}
{{- end }}

{{/* tunnelmesh.selectorLabels: the stable subset used by selectors (never change on upgrade). */}}
{{- define "tunnelmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tunnelmesh.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/*
DNS. Values kept by `helm upgrade --reuse-values` from a chart without them lack the dns section
and operator.dnsPort, so these read them with defaults.
*/}}
{{- define "tunnelmesh.dnsPort" -}}{{ .Values.operator.dnsPort | default 7753 }}{{- end }}

{{/* tunnelmesh.configureCoreDNS: "true" with dns.configureCoreDNS, else empty. */}}
{{- define "tunnelmesh.configureCoreDNS" -}}
{{- if (.Values.dns | default dict).configureCoreDNS }}true{{ end }}
{{- end }}

{{/* tunnelmesh.coreDNSConfigMap: "namespace/name" of CoreDNS's ConfigMap. */}}
{{- define "tunnelmesh.coreDNSConfigMap" -}}
{{- $cm := (.Values.dns | default dict).coreDNSConfigMap | default (dict "namespace" "kube-system" "name" "coredns") }}
{{- printf "%s/%s" $cm.namespace $cm.name }}
{{- end }}

{{/*
tunnelmesh.coreDNSZones: the keys of the CoreDNS server block for the chart's Mesh, as the
operator writes them (operator/dns/coredns_config.h): "DOMAIN:53", then the reverse zones of
mesh.ipv4CIDR and mesh.ipv6CIDR rounded down to a whole octet or nibble ("99.10.in-addr.arpa:53"
for 10.99.0.0/16), none for a range shorter than /8 (IPv4) or /4 (IPv6).
*/}}
{{- define "tunnelmesh.coreDNSZones" -}}
{{- $zones := list (printf "%s:53" (.Values.mesh.domain | lower | trimSuffix ".")) }}
{{- with .Values.mesh.ipv4CIDR }}
{{- $parts := splitList "/" . }}
{{- $octets := splitList "." (first $parts) }}
{{- $keep := div (atoi (last $parts)) 8 | int }}
{{- if gt $keep 0 }}
{{- $labels := list }}
{{- range $i := until $keep }}{{ $labels = prepend $labels (index $octets $i) }}{{ end }}
{{- $zones = append $zones (printf "%s.in-addr.arpa:53" (join "." $labels)) }}
{{- end }}
{{- end }}
{{- with .Values.mesh.ipv6CIDR }}
{{- $parts := splitList "/" (lower .) }}
{{- $keep := div (atoi (last $parts)) 4 | int }}
{{- if gt $keep 0 }}
{{- /* Expand "fd99:99::" to 32 hex digits: the groups before and after "::", zeros between. */}}
{{- $halves := splitList "::" (first $parts) }}
{{- $head := list }}
{{- if first $halves }}{{ $head = splitList ":" (first $halves) }}{{ end }}
{{- $tail := list }}
{{- if and (eq (len $halves) 2) (last $halves) }}{{ $tail = splitList ":" (last $halves) }}{{ end }}
{{- $groups := $head }}
{{- range until (max 0 (sub 8 (add (len $head) (len $tail))) | int) }}{{ $groups = append $groups "0" }}{{ end }}
{{- $hex := "" }}
{{- range concat $groups $tail }}{{ $hex = printf "%s%s" $hex (printf "%4s" . | replace " " "0") }}{{ end }}
{{- $labels := list }}
{{- range $i := until (min $keep (len $hex) | int) }}{{ $labels = prepend $labels (substr $i (add1 $i | int) $hex) }}{{ end }}
{{- $zones = append $zones (printf "%s.ip6.arpa:53" (join "." $labels)) }}
{{- end }}
{{- end }}
{{- join " " $zones }}
{{- end }}

{{/*
tunnelmesh.hookJob: a pre-delete hook Job that runs tunnelmesh-operator once with .args, as the
operator's ServiceAccount, with the operator's image, security context, resources and scheduling.
helm runs it before deleting anything of the release (so the ServiceAccount and its Roles still
exist). The Job goes when it succeeded, and before the next attempt; a failed one stays for
`kubectl logs`. Called with (dict "ctx" . "component" NAME "args" LIST).
*/}}
{{- define "tunnelmesh.hookJob" -}}
{{- $ := .ctx }}
{{- $op := $.Values.operator }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "tunnelmesh.fullname" $ }}-{{ .component }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "tunnelmesh.labels" (dict "ctx" $ "component" .component) | nindent 4 }}
  annotations:
    helm.sh/hook: pre-delete
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: 2
  activeDeadlineSeconds: 300
  template:
    metadata:
      labels:
        {{- include "tunnelmesh.selectorLabels" (dict "ctx" $ "component" .component) | nindent 8 }}
    spec:
      serviceAccountName: {{ include "tunnelmesh.operatorName" $ }}
      restartPolicy: Never
      {{- with $.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $op.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $op.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "tunnelmesh.image" $ }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          command:
            - /usr/bin/tunnelmesh-operator
            {{- range .args }}
            - {{ . | quote }}
            {{- end }}
            - --log-level
            - {{ $op.logLevel }}
          env:
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
          {{- with $op.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $op.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      {{- with $op.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $op.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/*
Metrics and log format, read with defaults for the same reason (values kept by --reuse-values from
a chart without them). Pass the component's values (.Values.operator or .Values.agent) and its
default port: tunnelmesh.metricsOn is "true" or "", tunnelmesh.metricsPort the port.
*/}}
{{- define "tunnelmesh.metricsOn" -}}
{{- $m := .values.metrics | default dict }}
{{- if or (not (hasKey $m "enabled")) $m.enabled }}true{{ end }}
{{- end }}
{{- define "tunnelmesh.metricsPort" -}}
{{- $m := .values.metrics | default dict }}{{ $m.port | default .port }}
{{- end }}
{{- /* The agent's SSH path, with defaults for values an older release kept (--reuse-values). */}}
{{- define "tunnelmesh.sshOn" -}}
{{- $s := .values.ssh | default dict }}
{{- if or (not (hasKey $s "enabled")) $s.enabled }}true{{ end }}
{{- end }}
{{- define "tunnelmesh.sshPort" -}}
{{- $s := .values.ssh | default dict }}{{ $s.port | default 7722 }}
{{- end }}
{{- define "tunnelmesh.logFormat" -}}{{ .logFormat | default "text" }}{{- end }}
