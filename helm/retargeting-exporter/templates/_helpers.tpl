{{/* Chart name, truncated to the 63 characters Kubernetes allows in names and label values. */}}
{{- define "retargeting-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release name + chart name, unless the release already holds it. */}}
{{- define "retargeting-exporter.fullname" -}}
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

{{/*
Name of the StatefulSet when sharding: 52 characters at most, because Kubernetes appends an
11-character revision hash to it in the pods' controller-revision-hash label.
*/}}
{{- define "retargeting-exporter.statefulSetName" -}}
{{- include "retargeting-exporter.fullname" . | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/* Chart name and version, as used by the helm.sh/chart label. */}}
{{- define "retargeting-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Namespace of the release's objects. */}}
{{- define "retargeting-exporter.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "retargeting-exporter.labels" -}}
helm.sh/chart: {{ include "retargeting-exporter.chart" . }}
{{ include "retargeting-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "retargeting-exporter.name" . }}
{{- end }}

{{/* Selector labels: stable for the life of the release (selectors are immutable). */}}
{{- define "retargeting-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "retargeting-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the ServiceAccount to use. */}}
{{- define "retargeting-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "retargeting-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: a digest wins over the tag; the tag defaults to appVersion. */}}
{{- define "retargeting-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the REST keys. */}}
{{- define "retargeting-exporter.secretName" -}}
{{- .Values.existingSecret | default (include "retargeting-exporter.fullname" .) }}
{{- end }}

{{/*
Where the exporter reads its config; the Dockerfile's ENTRYPOINT passes the same path.
*/}}
{{- define "retargeting-exporter.configDir" -}}
/etc/retargeting-exporter
{{- end }}

{{/*
Environment variable that carries an account's key: RETARGETING_KEY_ + the account name
upper-cased, with every character other than A-Z and 0-9 turned into "_".
*/}}
{{- define "retargeting-exporter.keyEnvName" -}}
{{- printf "RETARGETING_KEY_%s" (regexReplaceAll "[^A-Z0-9]" (upper .) "_") }}
{{- end }}

{{/*
Names of the accounts whose key comes from the chart's Secret (or existingSecret): those that
name no key source of their own. Rendered as a JSON list; use with fromJsonArray.
*/}}
{{- define "retargeting-exporter.secretAccounts" -}}
{{- $names := list }}
{{- range $account := .Values.config.accounts | default list }}
{{- if not (or (hasKey $account "rest_key_env") (hasKey $account "rest_key_file") (hasKey $account "rest_key")) }}
{{- $names = append $names (toString $account.name) }}
{{- end }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/*
Checks across values that the schema cannot express; each failure says what to change.
Included by every template that depends on the keys.
*/}}
{{- define "retargeting-exporter.validate" -}}
{{- $accounts := include "retargeting-exporter.secretAccounts" . | fromJsonArray }}
{{- if and .Values.existingSecret .Values.restKeys }}
{{- fail "set either restKeys (the chart creates the Secret) or existingSecret, not both" }}
{{- end }}
{{- $envNames := dict }}
{{- range $name := $accounts }}
{{- if not (regexMatch "^[-._a-zA-Z0-9]+$" $name) }}
{{- fail (printf "config.accounts: account %q cannot name a Secret entry (allowed: letters, digits, '-', '_', '.'); give it its own rest_key_env or rest_key_file" $name) }}
{{- end }}
{{- $env := include "retargeting-exporter.keyEnvName" $name }}
{{- if hasKey $envNames $env }}
{{- fail (printf "config.accounts: accounts %q and %q both map to the variable %s; rename one" (get $envNames $env) $name $env) }}
{{- end }}
{{- $_ := set $envNames $env $name }}
{{- if and (not $.Values.existingSecret) (not (get $.Values.restKeys $name)) }}
{{- fail (printf "restKeys: no key for account %q; set restKeys.%s (e.g. --set-string restKeys.%s=KEY) or use existingSecret" $name $name $name) }}
{{- end }}
{{- end }}
{{- range $name, $_ := .Values.restKeys }}
{{- if not (has $name $accounts) }}
{{- fail (printf "restKeys.%s: there is no account %q in config.accounts that takes its key from the Secret" $name $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The exporter config: values.config with rest_key_env filled in for accounts keyed by the Secret.
*/}}
{{- define "retargeting-exporter.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $accounts := list }}
{{- range $account := .Values.config.accounts | default list }}
{{- $copy := deepCopy $account }}
{{- if not (or (hasKey $copy "rest_key_env") (hasKey $copy "rest_key_file") (hasKey $copy "rest_key")) }}
{{- $_ := set $copy "rest_key_env" (include "retargeting-exporter.keyEnvName" (toString $copy.name)) }}
{{- end }}
{{- $accounts = append $accounts $copy }}
{{- end }}
{{- $_ := set $config "accounts" $accounts }}
{{- if .Values.accountFiles.existingSecret }}
{{- $patterns := $config.account_files | default list }}
{{- $_ := set $config "account_files" (append $patterns (printf "%s/*.yaml" .Values.accountFiles.mountPath)) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
The container's environment: one variable per Secret-keyed account, the shard settings, extraEnv.
*/}}
{{- define "retargeting-exporter.env" -}}
{{- range $name := include "retargeting-exporter.secretAccounts" . | fromJsonArray }}
- name: {{ include "retargeting-exporter.keyEnvName" $name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "retargeting-exporter.secretName" $ }}
      key: {{ $name | quote }}
{{- end }}
{{- if .Values.sharding.enabled }}
- name: RETARGETING_EXPORTER_SHARD_COUNT
  value: {{ .Values.sharding.shards | quote }}
{{- /* The pod name ends in the StatefulSet ordinal (-0, -1, ...) and the exporter takes the
shard index from it: this works on every Kubernetes version, unlike the pod-index label. */}}
- name: RETARGETING_EXPORTER_SHARD_INDEX
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod template shared by the Deployment and the StatefulSet. */}}
{{- define "retargeting-exporter.podTemplate" -}}
metadata:
  annotations:
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  labels:
    {{- include "retargeting-exporter.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "retargeting-exporter.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: exporter
      image: {{ include "retargeting-exporter.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - --web.listen-address=:9817
        - --log.level={{ .Values.log.level }}
        - --log.format={{ .Values.log.format }}
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      {{- with include "retargeting-exporter.env" . | trim }}
      env:
        {{- . | nindent 8 }}
      {{- end }}
      ports:
        - name: metrics
          containerPort: 9817
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /-/healthy
          port: metrics
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /-/ready
          port: metrics
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: {{ include "retargeting-exporter.configDir" . }}
          readOnly: true
        {{- if .Values.accountFiles.existingSecret }}
        - name: account-files
          mountPath: {{ .Values.accountFiles.mountPath }}
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "retargeting-exporter.fullname" . }}
    {{- if .Values.accountFiles.existingSecret }}
    {{- /* No checksum annotation for it: an update must not roll the pods. */}}
    - name: account-files
      secret:
        secretName: {{ .Values.accountFiles.existingSecret }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
