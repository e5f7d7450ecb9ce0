{{- define "mentor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mentor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "mentor.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "mentor.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mentor.labels" -}}
app.kubernetes.io/name: {{ include "mentor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mentor
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mentor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mentor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "mentor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mentor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the progress-token key: the user's, or the one the operator keeps. */}}
{{- define "mentor.reportKeySecret" -}}
{{- default (printf "%s-report-key" (include "mentor.fullname" .)) .Values.reportKey.existingSecret -}}
{{- end -}}

{{/* The rules the operator needs, shared by the ClusterRole and the per-namespace Roles. */}}
{{- define "mentor.rules" -}}
- apiGroups: ["mentor.dev"]
  resources: ["trainingjobs"]
  # create: a TuningJob's trials are TrainingJobs; patch: stopping a pruned trial, and removing
  # the trial-accounting finalizer once its GPU-hours are settled
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["mentor.dev"]
  resources: ["trainingjobs/status"]
  verbs: ["get", "patch"]
- apiGroups: ["mentor.dev"]
  resources: ["tuningjobs"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["mentor.dev"]
  resources: ["tuningjobs/status"]
  verbs: ["get", "patch"]
- apiGroups: ["mentor.dev"]
  # owner references that block their owner's deletion (the trials')
  resources: ["trainingjobs/finalizers", "tuningjobs/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods"]
  # patch: only to remove Mentor's GPU-accounting finalizer once a pod's time is settled
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
{{- if .Values.networkPolicy.jobs }}
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  # one a namespace, made once: trainer pods reach each other, Prometheus reaches the metrics
  verbs: ["create"]
{{- end }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Where the operator works: listed namespaces, or (explicitly) all of them; never neither. */}}
{{- define "mentor.checkScope" -}}
{{- if and (not .Values.watchNamespaces) (not .Values.allNamespaces) -}}
{{- fail "set watchNamespaces (the namespaces whose jobs Mentor runs, with a Role in each: least privilege) or allNamespaces=true (a ClusterRole: pods and Secrets in every namespace)" -}}
{{- end -}}
{{- if and .Values.watchNamespaces .Values.allNamespaces -}}
{{- fail "set watchNamespaces or allNamespaces, not both" -}}
{{- end -}}
{{- end -}}
