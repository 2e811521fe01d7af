{{/* Chart name. */}}
{{- define "faceswap-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name alone when it already contains the chart name. */}}
{{- define "faceswap-gateway.fullname" -}}
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

{{- define "faceswap-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/). */}}
{{- define "faceswap-gateway.labels" -}}
helm.sh/chart: {{ include "faceswap-gateway.chart" . }}
{{ include "faceswap-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: faceswap
{{- end }}

{{- define "faceswap-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "faceswap-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component; call with (dict "root" $ "component" "api"). */}}
{{- define "faceswap-gateway.componentLabels" -}}
{{ include "faceswap-gateway.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "faceswap-gateway.componentSelectorLabels" -}}
{{ include "faceswap-gateway.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "faceswap-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "faceswap-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "faceswap-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Milliseconds to whole seconds, rounded up. */}}
{{- define "faceswap-gateway.ceilSeconds" -}}
{{- div (add (int64 .) 999) 1000 }}
{{- end }}

{{/*
Shortest safe termination grace, in seconds: preStop sleep + gateway drain delay + one upstream
call (the longest in-flight request or worker step) + one worker lease.
*/}}
{{- define "faceswap-gateway.minGraceSeconds" -}}
{{- $c := .Values.config }}
{{- $drain := int64 $c.drainDelaySeconds }}
{{- $timeout := include "faceswap-gateway.ceilSeconds" $c.upstream.timeoutMs | int64 }}
{{- $lease := include "faceswap-gateway.ceilSeconds" $c.workers.leaseMs | int64 }}
{{- add $drain $drain $timeout $lease }}
{{- end }}

{{/* terminationGracePeriodSeconds of a component; call with (dict "root" $ "values" .Values.api "component" "api"). */}}
{{- define "faceswap-gateway.graceSeconds" -}}
{{- $min := include "faceswap-gateway.minGraceSeconds" .root | int64 }}
{{- if kindIs "invalid" .values.terminationGracePeriodSeconds }}
{{- add $min 10 }}
{{- else }}
{{- $set := int64 .values.terminationGracePeriodSeconds }}
{{- if le $set $min }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must exceed preStop + drain + upstream timeout + worker lease (%d s)" .component $set $min) }}
{{- end }}
{{- $set }}
{{- end }}
{{- end }}

{{/* Checks of settings the gateway would refuse at start-up anyway, caught at render time. */}}
{{- define "faceswap-gateway.validate" -}}
{{- $c := .Values.config }}
{{- if le (int64 $c.workers.leaseMs) (int64 $c.upstream.timeoutMs) }}
{{- fail "config.workers.leaseMs must exceed config.upstream.timeoutMs" }}
{{- end }}
{{- if le (mul (int64 $c.workers.creatingTimeoutSeconds) 1000) (int64 $c.upstream.timeoutMs) }}
{{- fail "config.workers.creatingTimeoutSeconds must exceed config.upstream.timeoutMs" }}
{{- end }}
{{- if lt (int64 $c.drainDelaySeconds) 0 }}
{{- fail "config.drainDelaySeconds must not be negative" }}
{{- end }}
{{- range $name := list "database" "redis" "upstream" }}
{{- if not (index $.Values.secrets $name).existingSecret }}
{{- fail (printf "secrets.%s.existingSecret must name an existing Secret" $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment from the referenced Secrets, shared by both roles. */}}
{{- define "faceswap-gateway.secretEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.database.existingSecret }}
      key: {{ .Values.secrets.database.key }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.redis.existingSecret }}
      key: {{ .Values.secrets.redis.key }}
- name: UPSTREAM_CLIENT_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.upstream.existingSecret }}
      key: {{ .Values.secrets.upstream.clientIdKey }}
- name: UPSTREAM_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.upstream.existingSecret }}
      key: {{ .Values.secrets.upstream.clientSecretKey }}
{{- with .Values.secrets.admin }}
{{- if .existingSecret }}
- name: {{ .envVar }}
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Pod template of one role; call with (dict "root" $ "component" "api" "values" .Values.api).
*/}}
{{- define "faceswap-gateway.podTemplate" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- $drain := int64 $root.Values.config.drainDelaySeconds }}
metadata:
  labels:
    {{- include "faceswap-gateway.componentSelectorLabels" . | nindent 4 }}
    app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "faceswap-gateway.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ include "faceswap-gateway.graceSeconds" . }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: gateway
      image: {{ include "faceswap-gateway.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: ["serve", "--role", {{ .component | quote }}]
      ports:
        - name: http
          containerPort: {{ $root.Values.containerPort }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "faceswap-gateway.fullname" $root }}
        {{- with $root.Values.secrets.objectStore.existingSecret }}
        - secretRef:
            name: {{ . }}
        {{- end }}
      env:
        - name: GATEWAY_ROLE
          value: {{ .component | quote }}
        - name: GATEWAY_DB_MAX_CONNECTIONS
          value: {{ $v.dbMaxConnections | quote }}
        {{- include "faceswap-gateway.secretEnv" $root | nindent 8 }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      startupProbe:
        httpGet:
          path: {{ $root.Values.probes.startup.path }}
          port: http
        periodSeconds: {{ $root.Values.probes.startup.periodSeconds }}
        timeoutSeconds: {{ $root.Values.probes.startup.timeoutSeconds }}
        failureThreshold: {{ $root.Values.probes.startup.failureThreshold }}
      livenessProbe:
        httpGet:
          path: {{ $root.Values.probes.liveness.path }}
          port: http
        periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
        timeoutSeconds: {{ $root.Values.probes.liveness.timeoutSeconds }}
        failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
      readinessProbe:
        httpGet:
          path: {{ $root.Values.probes.readiness.path }}
          port: http
        periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
        timeoutSeconds: {{ $root.Values.probes.readiness.timeoutSeconds }}
        failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
      {{- if gt $drain 0 }}
      lifecycle:
        preStop:
          exec:
            # Keep serving while endpoints and load balancers drop this pod; equals
            # GATEWAY_DRAIN_DELAY_MS, which follows once SIGTERM arrives.
            command: ["sleep", "{{ $drain }}"]
      {{- end }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: data
          mountPath: /var/lib/faceswap
        {{- if $root.Values.secrets.jwt.existingSecret }}
        - name: jwt
          mountPath: {{ $root.Values.secrets.jwt.mountPath }}
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $root.Values.scratch.tmpSizeLimit }}
    - name: data
      emptyDir:
        sizeLimit: {{ $root.Values.scratch.dataSizeLimit }}
    {{- with $root.Values.secrets.jwt }}
    {{- if .existingSecret }}
    - name: jwt
      secret:
        secretName: {{ .existingSecret }}
        defaultMode: 0400
        items:
          - key: {{ .key }}
            path: {{ .key }}
    {{- end }}
    {{- end }}
  {{- if $v.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml $v.topologySpreadConstraints | nindent 4 }}
  {{- else if $v.spreadAcrossNodes }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "faceswap-gateway.componentSelectorLabels" . | nindent 10 }}
  {{- end }}
  {{- with $v.nodeSelector }}
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
{{- end }}

{{/* A Deployment of one role; call with (dict "root" $ "component" "api" "values" .Values.api). */}}
{{- define "faceswap-gateway.deployment" -}}
{{- $root := .root }}
{{- $v := .values }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "faceswap-gateway.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "faceswap-gateway.componentLabels" . | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "faceswap-gateway.componentSelectorLabels" . | nindent 6 }}
  strategy:
    {{- toYaml $v.strategy | nindent 4 }}
  template:
    {{- include "faceswap-gateway.podTemplate" . | trim | nindent 4 }}
{{- end }}

{{/* HPA of one role (autoscaling/v2). */}}
{{- define "faceswap-gateway.hpa" -}}
{{- $root := .root }}
{{- $a := .values.autoscaling }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "faceswap-gateway.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "faceswap-gateway.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "faceswap-gateway.fullname" $root }}-{{ .component }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- with $a.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
    {{- with $a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* PDB of one role. */}}
{{- define "faceswap-gateway.pdb" -}}
{{- $root := .root }}
{{- $p := .values.pdb }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "faceswap-gateway.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "faceswap-gateway.componentLabels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $p.minAvailable) }}
  minAvailable: {{ $p.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "faceswap-gateway.componentSelectorLabels" . | nindent 6 }}
{{- end }}
