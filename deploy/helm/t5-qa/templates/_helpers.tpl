{{/* _helpers.tpl — names, labels, value checks and the tritonserver argument list of the t5-qa chart. */}}

{{- define "t5-qa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "t5-qa.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "t5-qa.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "t5-qa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "t5-qa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "t5-qa.labels" -}}
helm.sh/chart: {{ include "t5-qa.chart" . }}
{{ include "t5-qa.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/component: inference-server
app.kubernetes.io/part-of: t5-qa
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "t5-qa.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "t5-qa.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Env var that carries the restricted-API key; referenced as $(VAR) in args, which Kubernetes expands. */}}
{{- define "t5-qa.restrictedKeyEnv" -}}TRITON_RESTRICTED_API_KEY{{- end -}}

{{/* "s3" or "gs" for object-storage repositories; fails on anything else. */}}
{{- define "t5-qa.objectStorageScheme" -}}
{{- $path := .Values.modelRepository.objectStorage.path | toString -}}
{{- if hasPrefix "s3://" $path -}}s3
{{- else if hasPrefix "gs://" $path -}}gs
{{- else -}}
{{- fail (printf "modelRepository.objectStorage.path must start with s3:// or gs:// (got %q)" $path) -}}
{{- end -}}
{{- end -}}

{{/* The --model-repository value. */}}
{{- define "t5-qa.modelRepositoryPath" -}}
{{- $src := .Values.modelRepository.source -}}
{{- if eq $src "objectStorage" -}}
{{- $_ := include "t5-qa.objectStorageScheme" . -}}
{{- .Values.modelRepository.objectStorage.path -}}
{{- else if eq $src "pvc" -}}
{{- $pvc := .Values.modelRepository.pvc -}}
{{- if $pvc.repositoryDir -}}
{{- printf "%s/%s" (trimSuffix "/" $pvc.mountPath) (trimAll "/" $pvc.repositoryDir) -}}
{{- else -}}
{{- $pvc.mountPath -}}
{{- end -}}
{{- else -}}
{{- fail (printf "modelRepository.source must be objectStorage or pvc (got %q)" $src) -}}
{{- end -}}
{{- end -}}

{{/* "true" when a value is given (0 counts), "false" for null or "". */}}
{{- define "t5-qa.isSet" -}}
{{- if or (kindIs "invalid" .) (eq (toString .) "") -}}false{{- else -}}true{{- end -}}
{{- end -}}

{{/* Rejects value combinations that would deploy something broken. Included by the Deployment. */}}
{{- define "t5-qa.validateValues" -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- $preStop := int .Values.preStopSleepSeconds -}}
{{- $exit := int .Values.server.exitTimeoutSeconds -}}
{{- if le $grace (add $preStop $exit) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than preStopSleepSeconds (%d) + server.exitTimeoutSeconds (%d), or Triton is killed before in-flight requests finish" $grace $preStop $exit) -}}
{{- end -}}
{{- if .Values.autoscaling.enabled -}}
{{- if lt (int .Values.autoscaling.minReplicas) 1 -}}
{{- fail "autoscaling.minReplicas must be at least 1" -}}
{{- end -}}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- if .Values.podDisruptionBudget.enabled -}}
{{- $minSet := include "t5-qa.isSet" .Values.podDisruptionBudget.minAvailable -}}
{{- $maxSet := include "t5-qa.isSet" .Values.podDisruptionBudget.maxUnavailable -}}
{{- if eq $minSet $maxSet -}}
{{- fail "podDisruptionBudget: set exactly one of minAvailable and maxUnavailable (the other to \"\")" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.server.restrictedApi.enabled (not .Values.server.restrictedApi.existingSecret) -}}
{{- fail "server.restrictedApi.existingSecret is required when server.restrictedApi.enabled is true" -}}
{{- end -}}
{{- if and .Values.server.restrictedApi.enabled (has "health" .Values.server.restrictedApi.apis) -}}
{{- fail "server.restrictedApi.apis must not include health: the kubelet's gRPC probes cannot send the key header, so every probe would fail" -}}
{{- end -}}
{{- end -}}

{{/*
tritonserver arguments, one YAML list item per flag. The image's entrypoint runs args[0].
The restricted-API key is never written into the manifest: args reference $(TRITON_RESTRICTED_API_KEY),
which the kubelet expands from the container env (Triton itself does not expand variables).
*/}}
{{- define "t5-qa.serverArgs" -}}
{{- $s := .Values.server -}}
- tritonserver
- {{ printf "--model-repository=%s" (include "t5-qa.modelRepositoryPath" .) | quote }}
- "--model-control-mode=none"
- {{ printf "--exit-timeout-secs=%d" (int $s.exitTimeoutSeconds) | quote }}
{{- if $s.http.enabled }}
- {{ printf "--http-port=%d" (int $s.ports.http) | quote }}
{{- else }}
- "--allow-http=false"
{{- end }}
- {{ printf "--grpc-port=%d" (int $s.ports.grpc) | quote }}
- {{ printf "--metrics-port=%d" (int $s.ports.metrics) | quote }}
- "--allow-metrics=true"
- "--strict-readiness=true"
{{- if gt (int64 $s.cudaMemoryPoolByteSize) 0 }}
- {{ printf "--cuda-memory-pool-byte-size=0:%d" (int64 $s.cudaMemoryPoolByteSize) | quote }}
{{- end }}
{{- if $s.metrics.summaryLatencies }}
- "--metrics-config=summary_latencies=true"
{{- end }}
{{- if $s.restrictedApi.enabled }}
{{- $group := printf "%s:%s=$(%s)" (join "," $s.restrictedApi.apis) $s.restrictedApi.headerName (include "t5-qa.restrictedKeyEnv" .) }}
- {{ printf "--grpc-restricted-protocol=%s" $group | quote }}
{{- if $s.http.enabled }}
- {{ printf "--http-restricted-api=%s" $group | quote }}
{{- end }}
{{- end }}
{{- range $s.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}
