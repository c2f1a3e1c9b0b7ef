{{/* Names and labels. */}}
{{- define "runner-provisioner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "runner-provisioner.fullname" -}}
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

{{- define "runner-provisioner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "runner-provisioner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runner-provisioner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "runner-provisioner.labels" -}}
helm.sh/chart: {{ include "runner-provisioner.chart" . }}
{{ include "runner-provisioner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "runner-provisioner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "runner-provisioner.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image: repository@digest when a digest is set, else repository:tag. */}}
{{- define "runner-provisioner.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Where the pools and VMs live. */}}
{{- define "runner-provisioner.vmNamespace" -}}
{{- default .Release.Namespace .Values.provisioner.namespace -}}
{{- end -}}

{{/* The sidecar injector's webhook configuration, Service and TLS Secret. */}}
{{- define "runner-provisioner.injectorName" -}}
{{- printf "%s-sidecar-injector" (include "runner-provisioner.fullname" . | trunc 46 | trimSuffix "-") -}}
{{- end -}}

{{- define "runner-provisioner.injectorTLSSecret" -}}
{{- printf "%s-tls" (include "runner-provisioner.injectorName" .) -}}
{{- end -}}

{{/* The runner bundle image: repository@digest when a digest is set, else repository:tag. */}}
{{- define "runner-provisioner.bundleImage" -}}
{{- $i := .Values.runnerBundle.image -}}
{{- if $i.digest -}}
{{- printf "%s@%s" $i.repository $i.digest -}}
{{- else -}}
{{- printf "%s:%s" $i.repository (default .Chart.AppVersion $i.tag) -}}
{{- end -}}
{{- end -}}

{{/* The config keys for how VMs are built (both shapes): sidecar and runnerBundle. */}}
{{- define "runner-provisioner.vmConfig" -}}
{{- $cfg := dict "sidecar" (dict "enabled" .Values.sidecar.enabled) -}}
{{- $b := .Values.runnerBundle -}}
{{- if $b.enabled -}}
{{- $bundle := dict "image" (include "runner-provisioner.bundleImage" .) "pullPolicy" $b.image.pullPolicy -}}
{{- with $b.imagePullSecrets -}}{{- $_ := set $bundle "imagePullSecret" (first .).name -}}{{- end -}}
{{- $_ := set $cfg "runnerBundle" $bundle -}}
{{- end -}}
{{- toJson $cfg -}}
{{- end -}}

{{- define "runner-provisioner.leaseName" -}}
{{- printf "%s-leader" (include "runner-provisioner.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Which documented shape the values use: "seed" (0.1.0: resourceClass, or existingSecret alone)
or "v012" (0.1.2: resourceClasses or existingConfigMap). Both at once, or none, fails.
*/}}
{{- define "runner-provisioner.shape" -}}
{{- $p := .Values.provisioner -}}
{{- $rc := $p.resourceClass | default dict -}}
{{- $seed := or $rc.name $rc.token $rc.idleTimeout -}}
{{- $v012 := or (not (empty $p.resourceClasses)) $p.existingConfigMap -}}
{{- if and $seed $v012 -}}
{{- fail "provisioner.resourceClass (the 0.1.0 shape) and provisioner.resourceClasses/existingConfigMap (the 0.1.2 shape) are both set: use one shape. To move a 0.1.0 class to 0.1.2, write it as provisioner.resourceClasses.\"<namespace>/<name>\" with token, scaling.minReplicas, scaling.maxReplicas, scaling.idleTimeout and spec, and remove provisioner.resourceClass." -}}
{{- else if $v012 -}}
v012
{{- else if or $seed $p.existingSecret -}}
seed
{{- else -}}
{{- fail "no resource class is configured: set provisioner.resourceClass.name and .token (0.1.0 shape), provisioner.resourceClasses (0.1.2 shape), or provisioner.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/* Fails with a message naming the field when a value is out of range; renders nothing. */}}
{{- define "runner-provisioner.validate" -}}
{{- $p := .Values.provisioner -}}
{{- if hasKey .Values "tokenProxy" -}}
{{- fail "tokenProxy was renamed to sidecar: replace tokenProxy.enabled with sidecar.enabled (default true, the token proxy runs as a sidecar of each VM)" -}}
{{- end -}}
{{- if and .Values.sidecar.enabled (not (semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version)) -}}
{{- fail (printf "sidecar.enabled needs Kubernetes 1.29 or later (the token proxy is a native sidecar container); this cluster is %s: upgrade it, or set sidecar.enabled=false (each VM then holds its class token)" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- $shape := include "runner-provisioner.shape" . -}}
{{- if eq $shape "seed" -}}
{{- if not $p.existingSecret -}}
{{- $rc := $p.resourceClass -}}
{{- if not $rc.name -}}
{{- fail "provisioner.resourceClass.name is required (\"<namespace>/<name>\", e.g. \"my-org/my-runner\")" -}}
{{- end -}}
{{- if not $rc.token -}}
{{- fail "provisioner.resourceClass.token is required (the resource class token from CircleCI's Self-Hosted Runners page), or name a Secret in provisioner.existingSecret" -}}
{{- end -}}
{{- if gt (int $rc.minReplicas) (int $rc.maxReplicas) -}}
{{- fail (printf "provisioner.resourceClass.minReplicas (%d) must not be greater than provisioner.resourceClass.maxReplicas (%d)" (int $rc.minReplicas) (int $rc.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- $defaults := $p.resourceClassDefaults | default dict -}}
{{- if hasKey $defaults "token" -}}
{{- fail "provisioner.resourceClassDefaults.token is not allowed: a token belongs to one resource class; set provisioner.resourceClasses.\"<name>\".token" -}}
{{- end -}}
{{- if and $p.existingConfigMap (not $p.existingSecret) (empty $p.resourceClasses) -}}
{{- fail (printf "provisioner.existingConfigMap %q holds no tokens: name a Secret with keys circle-token and secrets.yaml in provisioner.existingSecret, or give each class's token under provisioner.resourceClasses.\"<namespace>/<name>\".token" $p.existingConfigMap) -}}
{{- end -}}
{{- include "runner-provisioner.validateScaling" (dict "path" "provisioner.resourceClassDefaults" "class" $defaults "defaults" dict "sidecar" .Values.sidecar.enabled) -}}
{{- range $name, $class := $p.resourceClasses -}}
{{- $class = $class | default dict -}}
{{- $path := printf "provisioner.resourceClasses.%q" $name -}}
{{- if and (not $p.existingSecret) (not $class.token) -}}
{{- fail (printf "%s.token is required (the resource class token from CircleCI's Self-Hosted Runners page), or name a Secret in provisioner.existingSecret" $path) -}}
{{- end -}}
{{- include "runner-provisioner.validateScaling" (dict "path" $path "class" $class "defaults" $defaults "sidecar" $.Values.sidecar.enabled) -}}
{{- end -}}
{{- end -}}
{{- if and (not $p.existingSecret) (not $p.circleToken) -}}
{{- fail "provisioner.circleToken is required (a CircleCI API token that can read runner tasks), or name a Secret with key circle-token in provisioner.existingSecret. CircleCI's newer task-count endpoint for resource-class tokens (/api/v3/runner/scale) is not publicly documented, so this chart polls /tasks and /tasks/running with circleToken" -}}
{{- end -}}
{{- end -}}

{{/*
min <= max for a 0.1.2 class after merging resourceClassDefaults and the provisioner's
defaults (3 and 10), and inside each schedule; grantSudo needs the sidecar.
*/}}
{{- define "runner-provisioner.validateScaling" -}}
{{- $s := .class.scaling | default dict -}}
{{- $ds := .defaults.scaling | default dict -}}
{{- $min := 3 -}}{{- $minFrom := "the default" -}}
{{- if hasKey $ds "minReplicas" -}}{{- $min = int $ds.minReplicas -}}{{- $minFrom = "from resourceClassDefaults" -}}{{- end -}}
{{- if hasKey $s "minReplicas" -}}{{- $min = int $s.minReplicas -}}{{- $minFrom = "" -}}{{- end -}}
{{- $max := 10 -}}{{- $maxFrom := "the default" -}}
{{- if hasKey $ds "maxReplicas" -}}{{- $max = int $ds.maxReplicas -}}{{- $maxFrom = "from resourceClassDefaults" -}}{{- end -}}
{{- if hasKey $s "maxReplicas" -}}{{- $max = int $s.maxReplicas -}}{{- $maxFrom = "" -}}{{- end -}}
{{- if gt $min $max -}}
{{- fail (printf "%s.scaling.minReplicas (%d%s) must not be greater than %s.scaling.maxReplicas (%d%s)" .path $min (ternary "" (printf ", %s" $minFrom) (eq $minFrom "")) .path $max (ternary "" (printf ", %s" $maxFrom) (eq $maxFrom ""))) -}}
{{- end -}}
{{- $path := .path -}}
{{- range $i, $sched := $s.schedules | default list -}}
{{- if and (hasKey $sched "minReplicas") (hasKey $sched "maxReplicas") (gt (int $sched.minReplicas) (int $sched.maxReplicas)) -}}
{{- fail (printf "%s.scaling.schedules[%d] (%s): minReplicas (%d) must not be greater than maxReplicas (%d)" $path $i ($sched.name | default "unnamed") (int $sched.minReplicas) (int $sched.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- $runner := .class.runner | default dict -}}
{{- if and $runner.grantSudo (not .sidecar) -}}
{{- fail (printf "%s.runner.grantSudo: true needs the sidecar (sidecar.enabled: true): without it the class token is in the VM, where a job with root could read it" .path) -}}
{{- end -}}
{{- end -}}

{{/* The 0.1.0 config.yaml the provisioner reads (it holds the class token: Secret only). */}}
{{- define "runner-provisioner.seedConfig" -}}
{{- $p := .Values.provisioner -}}
{{- $rc := $p.resourceClass -}}
{{- $class := dict "token" $rc.token "minReplicas" (int $rc.minReplicas) "maxReplicas" (int $rc.maxReplicas) "spec" $rc.spec -}}
{{- if $rc.idleTimeout -}}{{- $_ := set $class "idleTimeout" $rc.idleTimeout -}}{{- end -}}
{{- $cfg := merge (dict "circleciAPIAddr" $p.circleciAPIAddr "resourceClass" (dict $rc.name $class)) (include "runner-provisioner.vmConfig" . | fromJson) -}}
{{- if $p.pollInterval -}}{{- $_ := set $cfg "pollInterval" $p.pollInterval -}}{{- end -}}
{{- printf "%s\n" (toYaml $cfg) -}}
{{- end -}}

{{/* The 0.1.2 config.yaml (ConfigMap): everything but tokens and userData. */}}
{{- define "runner-provisioner.v012Config" -}}
{{- $p := .Values.provisioner -}}
{{- $classes := dict -}}
{{- range $name, $class := $p.resourceClasses -}}
{{- $_ := set $classes $name (omit ($class | default dict) "token" "userData") -}}
{{- end -}}
{{- $cfg := merge (dict "circleciAPIAddr" $p.circleciAPIAddr "resourceClasses" $classes) (include "runner-provisioner.vmConfig" . | fromJson) -}}
{{- $defaults := omit ($p.resourceClassDefaults | default dict) "userData" -}}
{{- $_ := set $cfg "resourceClassDefaults" $defaults -}}
{{- if $p.pollInterval -}}{{- $_ := set $cfg "pollInterval" $p.pollInterval -}}{{- end -}}
{{- printf "%s\n" (toYaml $cfg) -}}
{{- end -}}

{{/* The 0.1.2 secrets.yaml: per-class token and userData (resourceClassDefaults' userData fills in). */}}
{{- define "runner-provisioner.v012Secrets" -}}
{{- $p := .Values.provisioner -}}
{{- $defaults := $p.resourceClassDefaults | default dict -}}
{{- $classes := dict -}}
{{- range $name, $class := $p.resourceClasses -}}
{{- $class = $class | default dict -}}
{{- $entry := dict "token" ($class.token | default "") -}}
{{- $userData := $class.userData | default $defaults.userData -}}
{{- if $userData -}}{{- $_ := set $entry "userData" $userData -}}{{- end -}}
{{- $_ := set $classes $name $entry -}}
{{- end -}}
{{- printf "%s\n" (toYaml (dict "resourceClasses" $classes)) -}}
{{- end -}}

{{/* The rendered Secret's data (also hashed into checksum/secret). */}}
{{- define "runner-provisioner.secretData" -}}
circle-token: {{ .Values.provisioner.circleToken | b64enc | quote }}
{{- if eq (include "runner-provisioner.shape" .) "seed" }}
config.yaml: {{ include "runner-provisioner.seedConfig" . | b64enc | quote }}
{{- else }}
secrets.yaml: {{ include "runner-provisioner.v012Secrets" . | b64enc | quote }}
{{- end }}
{{- end -}}

{{- define "runner-provisioner.configMapData" -}}
config.yaml: |
{{ include "runner-provisioner.v012Config" . | indent 2 }}
{{- end -}}

{{- define "runner-provisioner.secretName" -}}
{{- default (include "runner-provisioner.fullname" .) .Values.provisioner.existingSecret -}}
{{- end -}}

{{- define "runner-provisioner.configMapName" -}}
{{- default (include "runner-provisioner.fullname" .) .Values.provisioner.existingConfigMap -}}
{{- end -}}

{{/*
Config volumes, shared by the Deployment and the uninstall hook. The API token is the file
`circle-token` beside the Secret's config (never an environment variable): the kubelet updates
it in place on a rotation and the provisioner re-reads it without a restart.
*/}}
{{- define "runner-provisioner.volumes" -}}
{{- if eq (include "runner-provisioner.shape" .) "seed" }}
- name: config
  secret:
    secretName: {{ include "runner-provisioner.secretName" . }}
    items:
      - key: config.yaml
        path: config.yaml
      - key: circle-token
        path: circle-token
{{- else }}
- name: config
  configMap:
    name: {{ include "runner-provisioner.configMapName" . }}
    items:
      - key: config.yaml
        path: config.yaml
- name: secrets
  secret:
    secretName: {{ include "runner-provisioner.secretName" . }}
    items:
      - key: secrets.yaml
        path: secrets.yaml
      - key: circle-token
        path: circle-token
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{/* Directories, not subPath mounts: the kubelet updates them in place, so edits hot-reload. */}}
{{- define "runner-provisioner.volumeMounts" -}}
- name: config
  mountPath: /etc/runner-provisioner
  readOnly: true
{{- if eq (include "runner-provisioner.shape" .) "v012" }}
- name: secrets
  mountPath: /etc/runner-provisioner-secrets
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Environment shared by the Deployment and the uninstall hook. */}}
{{- define "runner-provisioner.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: PROVISIONER_CONFIG
  value: /etc/runner-provisioner/config.yaml
{{- if eq (include "runner-provisioner.shape" .) "v012" }}
- name: PROVISIONER_SECRETS
  value: /etc/runner-provisioner-secrets/secrets.yaml
{{- end }}
- name: PROVISIONER_NAMESPACE
  value: {{ include "runner-provisioner.vmNamespace" . | quote }}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- /* A config the chart does not render cannot carry the values' API address: pass it on, unless it is the default. */}}
{{- $p := .Values.provisioner }}
{{- $external := or (and (eq (include "runner-provisioner.shape" .) "seed") $p.existingSecret) $p.existingConfigMap }}
{{- if and $external (ne (trimSuffix "/" $p.circleciAPIAddr) "https://runner.circleci.com") }}
- name: CIRCLECI_API_ADDR
  value: {{ $p.circleciAPIAddr | quote }}
{{- end }}
{{- end -}}

{{- define "runner-provisioner.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}
