{{/* Names and labels. */}}
{{- define "finq.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "finq.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels of one component: include "finq.selector" (list . "api") */}}
{{- define "finq.selector" -}}
app.kubernetes.io/name: {{ (index . 0).Chart.Name }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "finq.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "finq.fullname" .)) -}}
{{- end -}}

{{- define "finq.image" -}}
{{- printf "%s:%s" (index . 0) (index . 1).Values.image.tag -}}
{{- end -}}

{{/* The environment of every Python container: settings, secrets, REDIS_URL built from the
     password (Kubernetes expands $(REDIS_PASSWORD)), writable paths under /tmp. */}}
{{- define "finq.env" -}}
{{- range $k, $v := .Values.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
- name: REDIS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "finq.secretName" . }}, key: REDIS_PASSWORD}}
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:%v/%v" .Values.redis.host .Values.redis.port .Values.redis.db | quote }}
- name: DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ include "finq.secretName" . }}, key: DATABASE_URL}}
- name: APP_SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ include "finq.secretName" . }}, key: APP_SECRET_KEY}}
- name: WEBHOOK_SECRET
  valueFrom: {secretKeyRef: {name: {{ include "finq.secretName" . }}, key: WEBHOOK_SECRET, optional: true}}
- name: HOME
  value: /tmp
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
{{- range $k, $v := .Values.extraEnv }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/* Pod-level fields shared by every finq pod. */}}
{{- define "finq.podCommon" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "finq.tmpVolume" -}}
- name: tmp
  emptyDir: {sizeLimit: 1Gi}
{{- end -}}

{{- define "finq.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Scheduling knobs of a component: include "finq.scheduling" .Values.api */}}
{{- define "finq.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
