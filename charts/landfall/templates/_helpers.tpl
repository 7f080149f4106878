{{/* Release full name, at most 63 characters (it names the Lease, the RBAC objects and the Service). */}}
{{- define "landfall.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "landfall.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "landfall.labels" -}}
{{ include "landfall.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: landfall
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "landfall.serviceAccountName" -}}
{{- default (include "landfall.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* repository[:tag][@digest] of an image block; the tag defaults to the appVersion. */}}
{{- define "landfall.image" -}}
{{- $img := index . 0 -}}{{- $root := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches, comma-separated: watchNamespaces plus watchNamespace; empty: all. */}}
{{- define "landfall.watchNamespaces" -}}
{{- $ns := concat (.Values.watchNamespaces | default list) (compact (list .Values.watchNamespace)) | uniq -}}
{{- join "," $ns -}}
{{- end -}}
