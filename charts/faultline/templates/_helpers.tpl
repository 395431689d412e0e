{{/* The image reference: repository, and the tag or else the chart's appVersion. */}}
{{- define "faultline.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Labels every object carries; `component` is added per object. */}}
{{- define "faultline.labels" -}}
app.kubernetes.io/name: faultline
app.kubernetes.io/part-of: faultline
{{- end }}

{{/* Labels Helm itself would set; the render test leaves these two out of its comparison. */}}
{{- define "faultline.helmLabels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end }}
