{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "kache-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: every object of the release is named this. */}}
{{- define "kache-service.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that select the pods; never change them after the first install. */}}
{{- define "kache-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kache-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "kache-service.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kache-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: planner
{{- end }}

{{/* Namespace of the HA Lease (and so of its Role). */}}
{{- define "kache-service.leaseNamespace" -}}
{{- default .Release.Namespace .Values.ha.namespace }}
{{- end }}

{{/* Checks that fail the render with a clear message. */}}
{{- define "kache-service.validate" -}}
{{- if not (hasPrefix (printf "%s/" (trimSuffix "/" .Values.planner.persistence.mountPath)) .Values.planner.dbPath) }}
{{- fail (printf "planner.dbPath (%s) must live under planner.persistence.mountPath (%s): the root filesystem is read-only" .Values.planner.dbPath .Values.planner.persistence.mountPath) }}
{{- end }}
{{- if and .Values.auth.ingestExistingSecret (eq .Values.auth.ingestExistingSecret .Values.auth.existingSecret) (eq .Values.auth.ingestExistingSecretKey .Values.auth.existingSecretKey) }}
{{- fail "auth.ingestExistingSecret/ingestExistingSecretKey name the plan token's own key: the ingest token must be a different secret value" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.ha.enabled) }}
{{- fail "replicaCount > 1 needs ha.enabled=true: without a Lease every replica would plan from its own state" }}
{{- end }}
{{- end }}
