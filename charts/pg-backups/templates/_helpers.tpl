{{/* The release's base name, 40 characters at most (CronJob names must leave room for the
server name, the component and the 11 characters Kubernetes adds to Job names). */}}
{{- define "pg-backups.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* <fullname>-<server>[-<suffix>], a valid name of at most 52 characters (a CronJob's limit). */}}
{{- define "pg-backups.name" -}}
{{- $base := printf "%s-%s" (include "pg-backups.fullname" .root) .server.name -}}
{{- if .suffix -}}{{- $base = printf "%s-%s" $base .suffix -}}{{- end -}}
{{- if gt (len $base) 52 -}}
{{- fail (printf "the name %q is longer than 52 characters: shorten the release or server name" $base) -}}
{{- end -}}
{{- $base -}}
{{- end -}}

{{- define "pg-backups.labels" -}}
app.kubernetes.io/name: pg-backups
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
pg-backups.io/server: {{ .server.name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* A prefix joined with the server's name: "" → "main", "db/" → "db/main". */}}
{{- define "pg-backups.under" -}}
{{- $p := trimAll "/" (default "" .prefix) -}}
{{- if $p -}}{{ printf "%s/%s" $p .name }}{{- else -}}{{ .name }}{{- end -}}
{{- end -}}

{{/* Checks a server entry once. */}}
{{- define "pg-backups.checkServer" -}}
{{- if not .name -}}{{- fail "every entry of servers needs a name" -}}{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .name) -}}
{{- fail (printf "servers: %q is not a DNS label (lowercase letters, digits, -)" .name) -}}
{{- end -}}
{{- if not .host -}}{{- fail (printf "servers: %s needs a host" .name) -}}{{- end -}}
{{- if not (and .passwordSecret .passwordSecret.name) -}}
{{- fail (printf "servers: %s needs passwordSecret.name (an existing Secret)" .name) -}}
{{- end -}}
{{- end -}}

{{/* The pod of every Job: backup, check, drill, restore.
Arguments: root, server, component, args (list), image (dict), resources, env (list of
name/value dicts, after the ConfigMap), mountBackups (bool). */}}
{{- define "pg-backups.pod" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
metadata:
  labels:
    {{- include "pg-backups.labels" . | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  # The tool never calls the Kubernetes API. A mounted token would also stop the pod from
  # starting: it goes under /var/run/secrets (/var/run is /run), inside the read-only
  # projection at /run/secrets (kubernetes/kubernetes#65835).
  automountServiceAccountToken: false
  {{- with $v.serviceAccountName }}
  serviceAccountName: {{ . }}
  {{- end }}
  # SIGTERM reaches the running command through tini; it stops and cleans up at once.
  terminationGracePeriodSeconds: 120
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- with (default $v.nodeSelector .server.nodeSelector) }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ printf "%s:%s" .image.repository (toString .image.tag) | quote }}
      imagePullPolicy: {{ .image.pullPolicy | default "IfNotPresent" }}
      {{- with .args }}
      # The image's entry point passes arguments to pg-backups.
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      envFrom:
        - configMapRef:
            name: {{ include "pg-backups.name" (dict "root" $root "server" .server) }}
      {{- with .env }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      volumeMounts:
        - name: backups
          mountPath: /backups
        - name: secrets
          mountPath: /run/secrets
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if eq .component "restore" }}
        - name: restore
          mountPath: /restore
        {{- end }}
  volumes:
    - name: backups
      {{- if .mountBackups }}
      persistentVolumeClaim:
        claimName: {{ include "pg-backups.claim" (dict "root" $root "server" .server) }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    - name: tmp
      emptyDir: {}
    {{- if eq .component "restore" }}
    - name: restore
      emptyDir:
        sizeLimit: {{ $v.restore.stagingSizeLimit }}
    {{- end }}
    - name: secrets
      projected:
        defaultMode: 0440
        sources:
          - secret:
              name: {{ .server.passwordSecret.name }}
              items:
                - key: {{ .server.passwordSecret.key | default "pg_password" }}
                  path: pg_password
          {{- with $v.destinations.s3.existingSecret }}
          - secret:
              name: {{ . }}
              items:
                - key: s3_access_key
                  path: s3_access_key
                - key: s3_secret_key
                  path: s3_secret_key
          {{- end }}
          {{- with $v.destinations.rsync.existingSecret }}
          - secret:
              name: {{ . }}
              items:
                - key: pg_backups_ssh_key
                  path: pg_backups_ssh_key
                - key: pg_backups_known_hosts
                  path: pg_backups_known_hosts
          {{- end }}
          {{- with $v.notifications.existingSecret }}
          - secret:
              name: {{ . }}
              items:
                {{- range $v.notifications.keys }}
                - key: {{ . }}
                  path: {{ . }}
                {{- end }}
          {{- end }}
{{- end -}}

{{- define "pg-backups.claim" -}}
{{- if .root.Values.local.persistence.existingClaimPrefix -}}
{{- printf "%s%s" .root.Values.local.persistence.existingClaimPrefix .server.name -}}
{{- else -}}
{{- include "pg-backups.name" (dict "root" .root "server" .server "suffix" "data") -}}
{{- end -}}
{{- end -}}

{{/* A CronJob around the pod. Arguments as for the pod, plus schedule and deadline. */}}
{{- define "pg-backups.cronjob" -}}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "pg-backups.name" (dict "root" .root "server" .server "suffix" (ternary "" .component (eq .component "backup"))) }}
  labels:
    {{- include "pg-backups.labels" . | nindent 4 }}
spec:
  schedule: {{ .schedule | quote }}
  timeZone: {{ .root.Values.timeZone }}
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: {{ .root.Values.startingDeadlineSeconds }}
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 5
  jobTemplate:
    spec:
      # A failed run is not retried blindly: its JSON says why; check and the Job's status alert.
      backoffLimit: 0
      activeDeadlineSeconds: {{ .deadline }}
      template:
        {{- include "pg-backups.pod" . | nindent 8 }}
{{- end -}}
