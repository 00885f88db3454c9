{{/* Pod-level pieces the worker and the export Job share: the image user, volumes, mounts. */}}
{{- define "streamer.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "streamer.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{- define "streamer.volumes" -}}
- name: config
  configMap:
    name: {{ include "streamer.fullname" . }}-config
- name: models
  persistentVolumeClaim:
    claimName: {{ include "streamer.modelsClaim" . }}
- name: tmp
  emptyDir: {sizeLimit: 256Mi}
{{- end -}}
