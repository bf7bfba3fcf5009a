{{/* The release's base name, at most 40 characters (pod names add more). */}}
{{- define "wharf.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "wharf.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: socket, receiver or commander. */}}
{{- define "wharf.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "wharf.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "wharf.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-secrets" (include "wharf.fullname" .)) -}}
{{- end -}}

{{/*
The environment every Wharf container gets: its configuration file, its
instance id (the pod's name: stable for the StatefulSets), and the secrets.
*/}}
{{- define "wharf.env" -}}
- name: WHARF_CONFIG
  value: /etc/wharf/config/wharf.toml
- name: WHARF_LOG__FORMAT
  value: {{ .root.Values.logFormat | quote }}
- name: WHARF_COMMANDER__PROFILES_DIR
  value: /etc/wharf/profiles
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: WHARF_{{ .section }}__INSTANCE_ID
  value: $(POD_NAME)
- name: WHARF_AUTH__SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "wharf.secretName" .root }}
      key: auth-secret
- name: WHARF_STORE__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "wharf.secretName" .root }}
      key: store-url
{{- end -}}

{{/* The volumes every Wharf pod mounts. */}}
{{- define "wharf.volumes" -}}
- name: config
  configMap:
    name: {{ include "wharf.fullname" . }}-config
{{- if .Values.profilesConfigMap }}
- name: profiles
  configMap:
    name: {{ .Values.profilesConfigMap }}
{{- end }}
{{- end -}}

{{- define "wharf.volumeMounts" -}}
- name: config
  mountPath: /etc/wharf/config
  readOnly: true
{{- if .Values.profilesConfigMap }}
- name: profiles
  mountPath: /etc/wharf/profiles
  readOnly: true
{{- end }}
{{- end -}}

{{/* Probes on a component's operations port. */}}
{{- define "wharf.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: ops
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: ops
  periodSeconds: 5
  failureThreshold: 2
startupProbe:
  httpGet:
    path: /healthz
    port: ops
  periodSeconds: 2
  failureThreshold: 60
{{- end -}}

{{/* Scheduling settings shared by every pod. */}}
{{- define "wharf.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
