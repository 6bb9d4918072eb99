{{/* Names and labels, in the shape every chart uses. */}}
{{- define "cloudpop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cloudpop.fullname" -}}
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

{{- define "cloudpop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cloudpop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cloudpop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cloudpop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cloudpop
{{- end }}

{{- define "cloudpop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cloudpop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cloudpop.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret the chart creates for values given inline. */}}
{{- define "cloudpop.secretName" -}}
{{- printf "%s-secrets" (include "cloudpop.fullname" .) }}
{{- end }}

{{/* Name of the kubernetes.io/tls Secret mounted for POP3, or "" for a generated certificate. */}}
{{- define "cloudpop.tlsSecretName" -}}
{{- if eq .Values.tls.source "secret" }}
{{- .Values.tls.secretName }}
{{- else if eq .Values.tls.source "certManager" }}
{{- default (printf "%s-tls" (include "cloudpop.fullname" .)) .Values.tls.secretName }}
{{- end }}
{{- end }}

{{- define "cloudpop.cloud" -}}
{{- if eq .Values.mode "cloud" }}true{{ end }}
{{- end }}

{{/* Whether each secret exists, and which Secret holds it. */}}
{{- define "cloudpop.s3SecretName" -}}
{{- if .Values.s3.existingSecret }}{{ .Values.s3.existingSecret }}
{{- else if .Values.s3.accessKeyId }}{{ include "cloudpop.secretName" . }}
{{- end }}
{{- end }}

{{- define "cloudpop.redisSecretName" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecret }}
{{- else if .Values.redis.password }}{{ include "cloudpop.secretName" . }}
{{- end }}
{{- end }}

{{- define "cloudpop.apiSecretName" -}}
{{- if .Values.api.existingSecret }}{{ .Values.api.existingSecret }}
{{- else if or .Values.api.adminTokens .Values.api.ingestTokens }}{{ include "cloudpop.secretName" . }}
{{- end }}
{{- end }}

{{/* Container ports: fixed by the image, unprivileged so no capability is needed. */}}
{{- define "cloudpop.ports" -}}
{{- dict "pop3" 1110 "pop3s" 1995 "api" 7110 "ops" 9110 "lmtp" 2424 | toJson }}
{{- end }}

{{/*
A TOML value: strings and lists as JSON literals (valid TOML), whole numbers without the ".0"
that YAML-decoded floats would print, booleans as they are.
*/}}
{{- define "cloudpop.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- if eq (float64 .) (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "slice" . }}{{ toJson . }}
{{- else }}{{ fail (printf "config value %v has an unsupported type %s" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/* Port of a URL, from its scheme when it names none. */}}
{{- define "cloudpop.urlPort" -}}
{{- $u := urlParse . }}
{{- $hostport := splitList ":" $u.host }}
{{- if gt (len $hostport) 1 }}{{ last $hostport }}
{{- else if eq $u.scheme "https" }}443
{{- else if eq $u.scheme "http" }}80
{{- else if eq $u.scheme "ldaps" }}636
{{- else if eq $u.scheme "ldap" }}389
{{- else if eq $u.scheme "rediss" }}6379
{{- else if eq $u.scheme "redis" }}6379
{{- end }}
{{- end }}

{{/* The ports cloudpop reaches Redis on, space-separated: every URL of redis.url, the extra
ports, and in sentinel mode the data nodes' 6379 unless extra ports say otherwise. */}}
{{- define "cloudpop.redisPorts" -}}
{{- $ports := list }}
{{- range splitList "," .Values.redis.url }}
{{- $ports = append $ports (include "cloudpop.urlPort" (trim .)) }}
{{- end }}
{{- $extra := .Values.networkPolicy.egress.redis.ports | default list }}
{{- if and (eq .Values.redis.mode "sentinel") (not $extra) }}{{ $extra = list 6379 }}{{ end }}
{{- range $extra }}{{ $ports = append $ports (toString .) }}{{ end }}
{{- join " " $ports }}
{{- end }}

{{- define "cloudpop.replicas" -}}
{{- if kindIs "invalid" .Values.replicaCount }}{{ ternary 3 1 (eq .Values.mode "cloud") }}
{{- else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{- define "cloudpop.terminationGracePeriodSeconds" -}}
{{- add .Values.drain.preStopSeconds .Values.drain.graceSeconds .Values.drain.serverDelaySeconds 5 }}
{{- end }}

{{/* Refuse combinations the schema cannot express with a message that says what to do. */}}
{{- define "cloudpop.validate" -}}
{{- if eq .Values.mode "embedded" }}
{{- if gt (int (include "cloudpop.replicas" .)) 1 }}
{{- fail (printf "mode: embedded keeps the store on one volume and the locks in one process, so it runs exactly one replica (replicaCount is %v). Use mode: cloud with S3 and Redis to scale out." .Values.replicaCount) }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "mode: embedded runs one replica; autoscaling.enabled needs mode: cloud" }}
{{- end }}
{{- else }}
{{- if not .Values.s3.bucket }}
{{- fail "mode: cloud needs s3.bucket (and s3.endpoint unless the bucket is on AWS S3)" }}
{{- end }}
{{- if not .Values.redis.url }}
{{- fail "mode: cloud needs redis.url, e.g. redis://redis-master:6379/0" }}
{{- end }}
{{- end }}
{{- if and .Values.pop3.proxyProtocol.enabled (not .Values.pop3.proxyProtocol.trustedNetworks) }}
{{- fail "pop3.proxyProtocol.enabled needs pop3.proxyProtocol.trustedNetworks: the load balancers' source CIDRs" }}
{{- end }}
{{- if and (eq .Values.tls.source "secret") (not .Values.tls.secretName) }}
{{- fail "tls.source: secret needs tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and (eq .Values.tls.source "certManager") (or (not .Values.tls.certManager.issuerRef.name) (not .Values.tls.certManager.dnsNames)) }}
{{- fail "tls.source: certManager needs tls.certManager.issuerRef.name and tls.certManager.dnsNames" }}
{{- end }}
{{- if and .Values.s3.accessKeyId (not .Values.s3.secretAccessKey) (not .Values.s3.existingSecret) }}
{{- fail "s3.accessKeyId needs s3.secretAccessKey (or put both in s3.existingSecret)" }}
{{- end }}
{{- if and .Values.api.enabled (include "cloudpop.apiSecretName" .) (not .Values.api.tls) (not .Values.api.allowCleartext) }}
{{- fail "API tokens need api.tls=true: tokens and account passwords would cross the network in clear (or set api.allowCleartext=true where a service mesh encrypts pod traffic)" }}
{{- end }}
{{- if and (eq .Values.auth.backend "ldap") (or (not .Values.auth.ldap.url) (and (not .Values.auth.ldap.baseDN) (not .Values.auth.ldap.dnTemplate))) }}
{{- fail "auth.backend: ldap needs auth.ldap.url and auth.ldap.baseDN (or auth.ldap.dnTemplate)" }}
{{- end }}
{{- if and (eq .Values.auth.backend "ldap") .Values.auth.ldap.bindDN (not .Values.auth.existingSecret) }}
{{- fail "auth.ldap.bindDN needs auth.existingSecret with the key ldap-bind-password" }}
{{- end }}
{{- if and (eq .Values.auth.backend "http") (not .Values.auth.http.url) }}
{{- fail "auth.backend: http needs auth.http.url (https://)" }}
{{- end }}
{{- if and .Values.auth.oauth.jwksUrl (or (not .Values.auth.oauth.issuer) (not .Values.auth.oauth.audience)) }}
{{- fail "auth.oauth.jwksUrl needs auth.oauth.issuer and auth.oauth.audience" }}
{{- end }}
{{- if and (gt (int .Values.auth.sharedCredentialCacheSeconds) 0) (not .Values.auth.existingSecret) }}
{{- fail "auth.sharedCredentialCacheSeconds needs auth.existingSecret with the key credential-cache-key (at least 32 characters)" }}
{{- end }}
{{- if and (gt (int .Values.auth.sharedCredentialCacheSeconds) 0) (not (include "cloudpop.cloud" .)) }}
{{- fail "auth.sharedCredentialCacheSeconds keeps its entries in Redis: it needs cloud mode (s3 and redis)" }}
{{- end }}
{{- if and .Values.auth.scram.enabled (ne .Values.auth.backend "local") }}
{{- fail "auth.scram.enabled needs auth.backend: local (directories keep no SCRAM credentials)" }}
{{- end }}
{{- if contains "@" (default "" .Values.redis.url) }}
{{- fail "redis.url must not carry credentials: use redis.username with redis.password or redis.existingSecret" }}
{{- end }}
{{- end }}
