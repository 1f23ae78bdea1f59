{{/* The control-plane revision this release runs: `default` unless `revision` names one. */}}
{{- define "meshd.revision" -}}
{{- .Values.revision | default "default" -}}
{{- end }}

{{/* "-<revision>" for a named revision, nothing for the default one: how istiod's per-revision
objects are named (Deployment, Service, mesh ConfigMap, webhook configurations, RBAC). */}}
{{- define "meshd.suffix" -}}
{{- if ne (include "meshd.revision" .) "default" }}-{{ include "meshd.revision" . }}{{ end -}}
{{- end }}

{{/* What selects this release's pods: two revisions side by side never select each other's. */}}
{{- define "meshd.selector" -}}
app: istiod
istio.io/rev: {{ include "meshd.revision" . }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "meshd.labels" -}}
app: istiod
istio.io/rev: {{ include "meshd.revision" . }}
app.kubernetes.io/part-of: meshd
{{- end }}
