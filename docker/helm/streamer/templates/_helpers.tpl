{{/* Names and labels shared by every object of a release. */}}
{{- define "streamer.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "streamer.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "streamer.labels" -}}
{{ include "streamer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "streamer.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "streamer.modelsClaim" -}}
{{ .Values.models.existingClaim | default (printf "%s-models" (include "streamer.fullname" .)) }}
{{- end -}}

{{/* The replica ceiling: more members than partitions get no partition and sit idle. */}}
{{- define "streamer.maxReplicas" -}}
{{- $partitions := int .Values.config.topics.partitions -}}
{{- $max := int .Values.keda.maxReplicaCount | default $partitions -}}
{{- if gt $max $partitions -}}
{{- fail (printf "keda.maxReplicaCount %d exceeds config.topics.partitions %d: the extra workers would get no partition" $max $partitions) -}}
{{- end -}}
{{- $max -}}
{{- end -}}

{{/* Secrets belong in a Kubernetes Secret (secrets.existingSecret), never in values: refuse a
config that carries one, before it lands in a ConfigMap anyone with read access can see. */}}
{{- define "streamer.refuseSecretsInConfig" -}}
{{- if (.Values.config.features | default dict).password -}}
{{- fail "config.features.password is a secret: put it in the Secret named by secrets.existingSecret (key redis-password)" -}}
{{- end -}}
{{- range $section := list "common" "consumer" "producer" "admin" -}}
{{- range $key, $_ := (get ($.Values.config.kafka | default dict) $section | default dict) -}}
{{- if or (contains "password" $key) (contains "secret" $key) (eq $key "ssl.key.pem") -}}
{{- fail (printf "config.kafka.%s[%q] is a secret: put it in the Secret named by secrets.existingSecret and map it in secrets.env" $section $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $key, $_ := (get ($.Values.config.schemas | default dict) "registry_config" | default dict) -}}
{{- if or (contains "password" $key) (contains "user.info" $key) (contains "token" $key) (contains "secret" $key) -}}
{{- fail (printf "config.schemas.registry_config[%q] is a secret: put it in the Secret named by secrets.existingSecret and map it in secrets.env" $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
