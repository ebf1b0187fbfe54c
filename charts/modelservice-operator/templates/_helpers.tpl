{{/* Chart name, cut to the 63 characters a label value allows. */}}
{{- define "modelservice-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name unless it already contains the chart name. */}}
{{- define "modelservice-operator.fullname" -}}
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

{{- define "modelservice-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Recommended labels. */}}
{{- define "modelservice-operator.labels" -}}
helm.sh/chart: {{ include "modelservice-operator.chart" . }}
{{ include "modelservice-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: modelservice
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "modelservice-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelservice-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "modelservice-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelservice-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespaces a namespaced install watches. */}}
{{- define "modelservice-operator.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}{{ join "," .Values.watch.namespaces }}{{ else }}{{ .Release.Namespace }}{{ end }}
{{- end }}
