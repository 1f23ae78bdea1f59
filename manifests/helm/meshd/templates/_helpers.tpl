{{/* Labels every object carries. */}}
{{- define "meshd.labels" -}}
app: meshd
app.kubernetes.io/part-of: meshd
{{- end }}
