{{/* The release's objects' name: the release name, with the chart's unless it contains it. */}}
{{- define "demeter-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels that select the operator's pods (never change between upgrades). */}}
{{- define "demeter-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The recommended labels, on every object of the chart. */}}
{{- define "demeter-operator.labels" -}}
{{ include "demeter-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: demeter
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "demeter-operator.serviceAccountName" -}}
{{- default (include "demeter-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* What the operator may do with TrainingRuns and the objects they own, and nothing more: it
can create a client's identity Secret and read it back, but not list Secrets. */}}
{{- define "demeter-operator.rules" -}}
- apiGroups: ["demeter.dev"]
  resources: ["trainingruns"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["demeter.dev"]
  resources: ["trainingruns/status"]
  verbs: ["get", "patch", "update"]
# Owner references with blockOwnerDeletion need update on the owner's finalizers.
- apiGroups: ["demeter.dev"]
  resources: ["trainingruns/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods", "services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
