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
