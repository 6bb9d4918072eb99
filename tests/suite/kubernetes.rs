//! The Kubernetes delivery, checked with the real tools: `helm lint --strict` and `helm template`
//! for the defaults and every example values file, `kubectl kustomize` for every overlay, and
//! every rendered object validated by `kubernetes-validate --strict` (custom resources by their
//! CRD schemas); the values schema refuses bad values with messages that name the value; the
//! kustomize overlays are the chart's defaults; and a rendered pod runs: the binary started with
//! the rendered arguments, environment and configuration answers on every declared port and probe
//! path, becomes ready and drains within the rendered grace period.
//!
//! The tools come from the README's test command; a missing one fails the test.

use crate::common;

use common::api::{ADMIN_TOKEN, INGEST_TOKEN};
use common::cloud::{Redis, S3, S3_ACCESS_KEY, S3_SECRET_KEY};
use common::{BIN, Client};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/cloudpop");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/examples");
const KUSTOMIZE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/k8s");
/// Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas known.
const KUBE_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Runs a tool, returning stdout on success and stderr (with stdout) on failure.
fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; run scripts/test, which installs it"));
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() { Ok(stdout) } else { Err(format!("{}{stdout}", String::from_utf8_lossy(&out.stderr))) }
}

/// `helm template` of the chart with values files and `--set` pairs.
pub(crate) fn helm_template(files: &[&Path], sets: &[&str]) -> Result<String, String> {
    let mut args = vec!["template", "cloudpop", CHART, "--namespace", "mail"];
    for file in files {
        args.extend(["-f", file.to_str().unwrap()]);
    }
    for set in sets {
        args.extend(["--set", set]);
    }
    run("helm", &args, None)
}

pub(crate) fn render(files: &[&Path], sets: &[&str]) -> Vec<Value> {
    parse_yaml(&helm_template(files, sets).unwrap_or_else(|e| panic!("helm template failed:\n{e}")))
}

fn kustomize(dir: &str) -> Vec<Value> {
    let text = run("kubectl", &["kustomize", &format!("{KUSTOMIZE}/{dir}")], None)
        .unwrap_or_else(|e| panic!("kubectl kustomize {dir} failed:\n{e}"));
    parse_yaml(&text)
}

/// Every non-empty document of a YAML stream, as JSON (PyYAML, which kubernetes-validate uses).
fn parse_yaml(text: &str) -> Vec<Value> {
    let script = "import sys, json, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))";
    let json = run("python3", &["-c", script], Some(text.as_bytes())).unwrap();
    serde_json::from_str::<Vec<Value>>(&json).unwrap()
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(EXAMPLES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "examples missing from {EXAMPLES}");
    files
}

/// Validates every object: built-in kinds with `kubernetes-validate --strict` for the oldest and
/// newest supported Kubernetes (a kind it has no schema for is an error), custom resources with
/// their CRD schemas.
pub(crate) fn validate(what: &str, objects: &[Value]) {
    assert!(!objects.is_empty(), "{what}: nothing rendered");
    // A custom resource's API group has a dot and is not one of Kubernetes' own (*.k8s.io).
    let custom = |o: &&Value| {
        let api = o["apiVersion"].as_str().unwrap_or("");
        api.split_once('/').is_some_and(|(group, _)| group.contains('.') && !group.ends_with(".k8s.io"))
    };
    let (crds, builtin): (Vec<&Value>, Vec<&Value>) = objects.iter().partition(custom);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.json");
    // kubernetes-validate reads YAML, of which JSON (one document per line) is a subset.
    let stream: Vec<String> = builtin.iter().map(|o| format!("---\n{o}")).collect();
    std::fs::write(&file, stream.join("\n")).unwrap();
    for version in KUBE_VERSIONS {
        let out = run("kubernetes-validate", &["--strict", "-k", version, file.to_str().unwrap()], None)
            .unwrap_or_else(|e| panic!("{what}: invalid for Kubernetes {version}:\n{e}"));
        assert!(!out.contains("Couldn't find schema") && !out.contains("WARN"), "{what} ({version}):\n{out}");
        assert_eq!(out.matches("INFO").count(), builtin.len(), "{what}: not every object was checked:\n{out}");
    }
    if !crds.is_empty() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kubernetes/validate-crds.mjs");
        let input = serde_json::to_vec(&crds).unwrap();
        run("node", &[script], Some(&input)).unwrap_or_else(|e| panic!("{what}: custom resources invalid:\n{e}"));
    }
}

pub(crate) fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"].as_str().is_some_and(|n| n == name || n.starts_with(&format!("{name}-")))
        })
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", names(objects)))
}

fn names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects.iter().map(|o| o["kind"].as_str().unwrap()).collect()
}

#[test]
fn chart_lints_strictly_with_the_defaults_and_every_example() {
    let mut runs = vec![Vec::new()];
    runs.extend(example_files().into_iter().map(|f| vec!["-f".to_string(), f.to_string_lossy().into_owned()]));
    for extra in runs {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend(extra.iter().map(String::as_str));
        let out = run("helm", &args, None).unwrap_or_else(|e| panic!("helm lint {extra:?}:\n{e}"));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn every_rendering_is_valid_for_kubernetes() {
    let defaults = render(&[], &[]);
    assert_eq!(
        kinds(&defaults),
        [
            "NetworkPolicy",
            "PodDisruptionBudget",
            "ServiceAccount",
            "ConfigMap",
            "Service",
            "Service",
            "Deployment",
            "Pod"
        ],
        "{:?}",
        names(&defaults)
    );
    validate("default values", &defaults);

    let embedded = render(&[], &["mode=embedded"]);
    assert!(kinds(&embedded).contains(&"PersistentVolumeClaim"));
    assert!(!kinds(&embedded).contains(&"PodDisruptionBudget"), "one pod cannot have a disruption budget");
    validate("mode=embedded", &embedded);

    for file in example_files() {
        let objects = render(&[&file], &[]);
        validate(&file.display().to_string(), &objects);
    }

    // Every optional object at once: HPA, ServiceMonitor, Certificate, OTLP, PROXY protocol.
    let everything = render(
        &[],
        &[
            "autoscaling.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "tls.source=certManager",
            "tls.certManager.issuerRef.name=letsencrypt",
            "tls.certManager.dnsNames={pop.example.net}",
            "otel.endpoint=http://otel-collector.observability:4317",
            "pop3.proxyProtocol.enabled=true",
            "pop3.proxyProtocol.trustedNetworks={10.0.0.0/8}",
            "api.adminTokens={admin-token-0123456789}",
            "api.tls=true",
        ],
    );
    for kind in ["HorizontalPodAutoscaler", "ServiceMonitor", "Certificate", "Secret"] {
        assert!(kinds(&everything).contains(&kind), "{kind} missing: {:?}", names(&everything));
    }
    let deployment = find(&everything, "Deployment", "cloudpop");
    assert!(deployment["spec"].get("replicas").is_none(), "with an HPA the Deployment must not set replicas");
    validate("every optional object", &everything);
}

/// Redis Cluster and Sentinel: the settings reach the configuration file, and the network
/// policy lets the pods reach every node or sentinel, and in sentinel mode the primary.
#[test]
fn redis_cluster_and_sentinel_reach_the_config_and_the_network_policy() {
    let egress_ports = |objects: &[Value]| -> Vec<u64> {
        let policy = find(objects, "NetworkPolicy", "cloudpop");
        let mut ports: Vec<u64> = policy["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| rule["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["port"].as_u64())
            .collect();
        ports.sort();
        ports.dedup();
        ports
    };
    let cloud = ["mode=cloud", "s3.bucket=mail", "s3.endpoint=http://minio:9000", "networkPolicy.enabled=true"];
    let cluster = [&cloud[..], &["redis.mode=cluster", "redis.url=redis://r0:7000\\,redis://r1:7001"]].concat();
    let objects = render(&[], &cluster);
    validate("redis cluster", &objects);
    let config = find(&objects, "ConfigMap", "cloudpop")["data"]["cloudpop.toml"].as_str().unwrap().to_owned();
    assert!(config.contains("redis_mode = \"cluster\""), "{config}");
    assert!(config.contains("redis_url = \"redis://r0:7000,redis://r1:7001\""), "{config}");
    let ports = egress_ports(&objects);
    assert!(ports.contains(&7000) && ports.contains(&7001), "{ports:?}");

    let sentinel =
        [&cloud[..], &["redis.mode=sentinel", "redis.url=redis://s0:26379", "redis.sentinelMaster=mail-primary"]]
            .concat();
    let objects = render(&[], &sentinel);
    let config = find(&objects, "ConfigMap", "cloudpop")["data"]["cloudpop.toml"].as_str().unwrap().to_owned();
    assert!(config.contains("redis_sentinel_master = \"mail-primary\""), "{config}");
    let ports = egress_ports(&objects);
    assert!(ports.contains(&26379) && ports.contains(&6379), "sentinel and primary ports: {ports:?}");
    let moved = [&sentinel[..], &["networkPolicy.egress.redis.ports={6380}"]].concat();
    let ports = egress_ports(&render(&[], &moved));
    assert!(ports.contains(&6380) && !ports.contains(&6379), "{ports:?}");
}

/// LMTP: on the in-cluster Service only, with its settings in the configuration file and an
/// ingress rule of its own.
#[test]
fn lmtp_is_served_in_cluster_with_its_own_policy() {
    let sets = ["lmtp.enabled=true", "lmtp.trustedNetworks={10.42.0.0/16}", "lmtp.stripDomain=true"];
    let objects = render(&[], &sets);
    validate("lmtp", &objects);
    let config = find(&objects, "ConfigMap", "cloudpop")["data"]["cloudpop.toml"].as_str().unwrap().to_owned();
    for line in
        ["lmtp_listen = \"0.0.0.0:2424\"", "lmtp_trusted_networks = [\"10.42.0.0/16\"]", "lmtp_strip_domain = true"]
    {
        assert!(config.contains(line), "{line} missing:\n{config}");
    }
    let port_names = |service: &Value| -> Vec<String> {
        service["spec"]["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
    };
    let internal = find(&objects, "Service", "cloudpop-api");
    assert!(port_names(internal).contains(&"lmtp".to_owned()), "{internal}");
    assert!(
        !port_names(find(&objects, "Service", "cloudpop-pop3")).contains(&"lmtp".to_owned()),
        "LMTP must not be public"
    );
    let policy = find(&objects, "NetworkPolicy", "cloudpop");
    let lmtp_rule =
        policy["spec"]["ingress"].as_array().unwrap().iter().find(|rule| rule["ports"][0]["port"] == "lmtp");
    assert!(lmtp_rule.is_some_and(|rule| rule["from"].is_array()), "no restricted LMTP ingress rule: {policy}");
    let defaults = render(&[], &[]);
    let config = find(&defaults, "ConfigMap", "cloudpop")["data"]["cloudpop.toml"].as_str().unwrap().to_owned();
    assert!(!config.contains("lmtp_listen"), "LMTP is off by default");
}

#[test]
fn kustomize_overlays_are_valid_for_kubernetes() {
    for dir in ["overlays/cloud", "overlays/embedded", "examples/cloud-with-secrets"] {
        validate(dir, &kustomize(dir));
    }
}

#[test]
fn values_schema_and_chart_refuse_bad_values_with_clear_messages() {
    // (--set pairs, a fragment the message must contain)
    let cases: &[(&[&str], &str)] = &[
        (&["mode=clustered"], "/mode"),
        (&["replicaCount=0"], "/replicaCount"),
        (&["replicaCount=three"], "/replicaCount"),
        (&["s3.bucket="], "/s3/bucket"),
        (&["s3.bucket=Not_A_Bucket"], "/s3/bucket"),
        (&["s3.endpoint=minio:9000"], "/s3/endpoint"),
        (&["redis.url="], "/redis/url"),
        (&["redis.url=redis://user:pass@redis:6379"], "/redis/url"),
        (&["redis.url=http://redis:6379"], "/redis/url"),
        (&["redis.mode=shards"], "/redis/mode"),
        (&["mode=cloud", "s3.bucket=mail", "redis.mode=sentinel"], "/redis/sentinelMaster"),
        (&["pop3.service.type=Ingress"], "/pop3/service/type"),
        (&["pop3.service.externalTrafficPolicy=Anywhere"], "/pop3/service/externalTrafficPolicy"),
        (&["pop3.service.ports.pop3=70000"], "/pop3/service/ports/pop3"),
        (&["pop3.proxyProtocol.trustedNetworks={everyone}"], "/pop3/proxyProtocol/trustedNetworks/0"),
        (&["tls.source=letsencrypt"], "/tls/source"),
        (&["api.adminTokens={short}"], "/api/adminTokens/0"),
        (&["drain.graceSeconds=-1"], "/drain/graceSeconds"),
        (&["otel.sampler=sometimes"], "/otel/sampler"),
        (&["log.format=xml"], "/log/format"),
        (&["config.idle_timeout_secs=60"], "/config/idle_timeout_secs"),
        (&["config.pop3_listen=0.0.0.0:110"], "pop3_listen"),
        (&["config.s3_secret_access_key=hunter2"], "s3_secret_access_key"),
        (&["image.digest=latest"], "/image/digest"),
        (&["replicas=3"], "replicas"),
        (&["mode=embedded", "replicaCount=3"], "runs exactly one replica (replicaCount is 3)"),
        (&["mode=embedded", "autoscaling.enabled=true"], "autoscaling.enabled needs mode: cloud"),
        (&["pop3.proxyProtocol.enabled=true"], "needs pop3.proxyProtocol.trustedNetworks"),
        (&["tls.source=secret"], "tls.source: secret needs tls.secretName"),
        (&["tls.source=certManager"], "needs tls.certManager.issuerRef.name"),
        (&["s3.accessKeyId=AKIA0000"], "s3.accessKeyId needs s3.secretAccessKey"),
        (&["api.adminTokens={admin-token-0123456789}"], "API tokens need api.tls=true"),
        (&["lmtp.enabled=true"], "/lmtp/trustedNetworks"),
        (&["lmtp.trustedNetworks={everyone}"], "/lmtp/trustedNetworks/0"),
        (&["lmtp.subaddressSeparator=@"], "/lmtp/subaddressSeparator"),
    ];
    assert_refused(cases);
}

/// Each set of `--set` pairs must fail to render with a message containing its fragment.
pub(crate) fn assert_refused(cases: &[(&[&str], &str)]) {
    for (sets, fragment) in cases {
        match helm_template(&[], sets) {
            Ok(_) => panic!("{sets:?} was accepted"),
            Err(message) => {
                assert!(message.contains(fragment), "{sets:?}: the message does not name {fragment:?}:\n{message}")
            }
        }
    }
}

/// The parts of an object that decide behaviour: no Helm or kustomize bookkeeping labels, no
/// checksums, ConfigMap name hashes and comments dropped, volumes in name order.
fn essence(mut object: Value) -> Value {
    let metadata = object["metadata"].as_object_mut().unwrap();
    metadata.retain(|k, _| k == "name");
    if let Some(template) = object.pointer_mut("/spec/template/metadata") {
        template.as_object_mut().unwrap().remove("annotations");
    }
    if let Some(volumes) = object.pointer_mut("/spec/template/spec/volumes").and_then(Value::as_array_mut) {
        // Volume order means nothing (and strategic merge patches reorder them).
        volumes.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        for volume in volumes.iter_mut() {
            if let Some(name) = volume.pointer_mut("/configMap/name") {
                *name = Value::from("cloudpop");
            }
        }
    }
    if object["kind"] == "ConfigMap" {
        object["metadata"]["name"] = Value::from("cloudpop");
        let text = object["data"]["cloudpop.toml"].as_str().unwrap();
        let settings: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
        object["data"]["cloudpop.toml"] = Value::from(settings.join("\n"));
    }
    object
}

fn by_kind_and_name(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .filter(|o| o["kind"] != "Pod") // the helm test hook has no kustomize counterpart
        .map(essence)
        .map(|o| (format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()), o))
        .collect()
}

#[test]
fn kustomize_overlays_match_the_chart_defaults() {
    for (overlay, sets) in [("overlays/cloud", &[][..]), ("overlays/embedded", &["mode=embedded"][..])] {
        let chart = by_kind_and_name(render(&[], sets));
        let mut manifests = by_kind_and_name(kustomize(overlay));
        // Namespaces differ (the chart renders into `mail` here, kustomize leaves it to kubectl).
        for object in manifests.values_mut() {
            object["metadata"].as_object_mut().unwrap().remove("namespace");
        }
        let keys = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&chart), keys(&manifests), "{overlay}: different objects");
        for (key, chart_object) in &chart {
            let manifest_object = &manifests[key];
            assert_eq!(
                chart_object, manifest_object,
                "{overlay}: {key} differs from the chart's default\nchart: {chart_object:#}\nkustomize: {manifest_object:#}"
            );
        }
    }
}

#[test]
fn secrets_become_mounted_files_never_configmap_values() {
    let file = Path::new(EXAMPLES).join("minio-keys-metallb.yaml");
    let objects = render(&[&file], &[]);
    let config = find(&objects, "ConfigMap", "cloudpop")["data"]["cloudpop.toml"].as_str().unwrap().to_owned();
    let secret = find(&objects, "Secret", "cloudpop-secrets");
    let values = std::fs::read_to_string(&file).unwrap();
    for sensitive in ["change-me-please-0123456789", "change-me-too-0123456789", "admin-token-0123456789abcdef"] {
        assert!(values.contains(sensitive));
        assert!(!config.contains(sensitive), "{sensitive} is in the ConfigMap:\n{config}");
        let in_secret = secret["data"].as_object().unwrap().values().any(|v| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap() == sensitive.as_bytes()
        });
        assert!(in_secret, "{sensitive} is not in the chart's Secret");
    }
    for key in [
        "s3_secret_access_key_file",
        "s3_access_key_id_file",
        "redis_password_file",
        "api_admin_tokens_file",
        "tls_cert",
    ] {
        assert!(
            config.contains(&format!("{key} = \"/var/run/secrets/cloudpop/")),
            "{key} not a mounted file:\n{config}"
        );
    }
    // The pod template's checksum changes with the configuration, so pods roll.
    let checksum = |objects: &[Value]| {
        find(objects, "Deployment", "cloudpop")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .clone()
    };
    let changed = render(&[&file], &["config.max_message_size=2048"]);
    assert_ne!(checksum(&objects), checksum(&changed));
}

/// A rendered pod run as a local process: the pod's volumes become directories, its network
/// namespace one loopback address of its own (so the rendered ports stay as they are).
struct Pod {
    child: std::process::Child,
    ip: String,
    /// Container port by name.
    ports: BTreeMap<String, u16>,
    container: Value,
    _volumes: tempfile::TempDir,
    cert: PathBuf,
}

impl Pod {
    fn addr(&self, port: &str) -> SocketAddr {
        format!("{}:{}", self.ip, self.ports[port]).parse().unwrap()
    }

    /// Resolves a probe's or Service's port (a name or a number) to a container port.
    fn port(&self, port: &Value) -> u16 {
        match port {
            Value::String(name) => *self.ports.get(name).unwrap_or_else(|| panic!("no container port named {name}")),
            Value::Number(n) => {
                let n = n.as_u64().unwrap() as u16;
                assert!(self.ports.values().any(|p| *p == n), "no container port {n}");
                n
            }
            other => panic!("odd port {other}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._volumes.path().join("pod.log")).unwrap_or_default()
    }

    fn get(&self, port: u16, path: &str) -> u16 {
        let addr: SocketAddr = format!("{}:{port}", self.ip).parse().unwrap();
        common::http_get(addr, path).0
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_pod(objects: &[Value], external_secrets: &BTreeMap<&str, BTreeMap<&str, Vec<u8>>>, cert: PathBuf) -> Pod {
    use base64::Engine;
    let deployment = find(objects, "Deployment", "cloudpop");
    let spec = &deployment["spec"]["template"]["spec"];
    let container = spec["containers"][0].clone();
    let volumes_dir = tempfile::tempdir().unwrap();
    // A loopback address of this pod's own: 127.x.y.z is loopback on Linux.
    let n = std::process::id();
    let ip = format!("127.{}.{}.{}", 100 + n % 100, (n / 100) % 250, 1 + (n / 25_000) % 250);

    // Volumes: ConfigMaps and Secrets as files (their `items` honoured), emptyDir and claims as
    // empty directories.
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for mount in container["volumeMounts"].as_array().unwrap() {
        let name = mount["name"].as_str().unwrap();
        let volume = spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap();
        let local = volumes_dir.path().join(name);
        std::fs::create_dir_all(&local).unwrap();
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if let Some(source) = volume.get("configMap") {
            let map = find(objects, "ConfigMap", source["name"].as_str().unwrap());
            for (key, value) in map["data"].as_object().unwrap() {
                files.insert(key.clone(), value.as_str().unwrap().as_bytes().to_vec());
            }
        } else if let Some(source) = volume.get("secret") {
            let secret_name = source["secretName"].as_str().unwrap();
            let data: BTreeMap<String, Vec<u8>> =
                match objects.iter().find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == secret_name) {
                    Some(secret) => secret["data"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| {
                            (k.clone(), base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap())
                        })
                        .collect(),
                    None => external_secrets
                        .get(secret_name)
                        .unwrap_or_else(|| {
                            panic!("the pod mounts Secret {secret_name}, which neither the chart nor the test made")
                        })
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                };
            match source.get("items") {
                Some(items) => {
                    for item in items.as_array().unwrap() {
                        let key = item["key"].as_str().unwrap();
                        let value = data.get(key).unwrap_or_else(|| panic!("Secret {secret_name} has no key {key}"));
                        files.insert(item["path"].as_str().unwrap().into(), value.clone());
                    }
                }
                None => files.extend(data),
            }
        } else {
            assert!(volume.get("emptyDir").is_some() || volume.get("persistentVolumeClaim").is_some(), "{volume}");
        }
        for (path, content) in files {
            std::fs::write(local.join(path), content).unwrap();
        }
        mounts.push((mount["mountPath"].as_str().unwrap().to_owned(), local));
    }
    // Longest mount path first, so /a/b is not rewritten as /a + b.
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    // One pass, so a replacement is never rewritten again (a local path may contain /tmp).
    let localize = |text: &str| {
        let text = text.replace("0.0.0.0:", &format!("{ip}:"));
        let mut out = String::new();
        let mut rest = text.as_str();
        'scan: while !rest.is_empty() {
            for (path, local) in &mounts {
                let at_boundary =
                    rest[path.len().min(rest.len())..].chars().next().is_none_or(|c| c == '/' || c == '"' || c == ' ');
                if rest.starts_with(path.as_str()) && at_boundary {
                    out.push_str(local.to_str().unwrap());
                    rest = &rest[path.len()..];
                    continue 'scan;
                }
            }
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    };
    // The configuration file as the pod would read it, with the same path rewriting.
    for (path, local) in &mounts {
        let config = local.join("cloudpop.toml");
        if path == "/etc/cloudpop" && config.exists() {
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(&config, localize(&text)).unwrap();
        }
    }

    let args: Vec<String> =
        container["args"].as_array().unwrap().iter().map(|a| localize(a.as_str().unwrap())).collect();
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = if let Some(value) = var.get("value") {
            localize(value.as_str().unwrap())
        } else if var.pointer("/valueFrom/fieldRef/fieldPath").is_some_and(|f| f == "metadata.name") {
            "cloudpop-7d9f8-abcde".into()
        } else {
            panic!("the test does not know how to provide {var}")
        };
        env.push((name, value));
    }
    let ports: BTreeMap<String, u16> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["containerPort"].as_u64().unwrap() as u16))
        .collect();
    let child = Command::new(BIN)
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(volumes_dir.path().join("pod.log")).unwrap()))
        .spawn()
        .unwrap();
    Pod { child, ip, ports, container, _volumes: volumes_dir, cert }
}

#[test]
fn a_rendered_pod_runs_answers_on_every_port_and_drains_in_time() {
    // The image's entrypoint is the binary itself, so the rendered args are its arguments.
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(dockerfile.contains("ENTRYPOINT [\"cloudpop\"]"));

    let s3 = S3::start();
    let bucket = s3.bucket("k8s-pool");
    let redis = Redis::start();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_dir = tempfile::tempdir().unwrap();
    let cert = cert_dir.path().join("ca.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    let external = BTreeMap::from([(
        "pop-tls",
        BTreeMap::from([
            ("tls.crt", certified.cert.pem().into_bytes()),
            ("tls.key", certified.signing_key.serialize_pem().into_bytes()),
        ]),
    )]);
    let sets = [
        format!("s3.endpoint={}", s3.endpoint()),
        format!("s3.bucket={bucket}"),
        format!("s3.accessKeyId={S3_ACCESS_KEY}"),
        format!("s3.secretAccessKey={S3_SECRET_KEY}"),
        format!("redis.url={}/0", redis.url()),
        format!("api.adminTokens={{{ADMIN_TOKEN}}}"),
        format!("api.ingestTokens={{{INGEST_TOKEN}}}"),
        "tls.source=secret".into(),
        "tls.secretName=pop-tls".into(),
        // Plain gRPC keeps the test's clients simple; the chart refuses tokens without TLS
        // unless told so.
        "api.allowCleartext=true".into(),
        "drain.preStopSeconds=2".into(),
        "drain.graceSeconds=3".into(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let objects = render(&[], &sets);
    let pod = start_pod(&objects, &external, cert);
    let container = pod.container.clone();

    // Startup probe: ready within its own budget.
    let startup = &container["startupProbe"];
    let budget = startup["periodSeconds"].as_u64().unwrap() * startup["failureThreshold"].as_u64().unwrap();
    let port = pod.port(&startup["httpGet"]["port"]);
    let path = startup["httpGet"]["path"].as_str().unwrap();
    let started = Instant::now();
    let mut pod = pod;
    while pod.get_or_zero(port, path) != 200 {
        if let Some(status) = pod.child.try_wait().unwrap() {
            panic!("the pod exited ({status}):\n{}", pod.log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(budget),
            "not started within the startup probe's {budget} s:\n{}",
            pod.log()
        );
        std::thread::sleep(Duration::from_millis(100)); // the kubelet's probes poll too
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(pod.get(pod.port(&get["port"]), get["path"].as_str().unwrap()), 200, "{probe}");
    }

    // Every container port answers as what its name says.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut answered = Vec::new();
    for (name, _) in pod.ports.clone() {
        let addr = pod.addr(&name);
        match name.as_str() {
            "grpc" => runtime.block_on(async {
                cloudpop::client::health(&format!("http://{addr}"), None).await.unwrap();
                use cloudpop::api::proto::CreateAccountRequest;
                let mut admin = common::api::admin(addr, Some(ADMIN_TOKEN)).await;
                let request = CreateAccountRequest {
                    name: "alice".into(),
                    password: "pod-secret".into(),
                    quota: None,
                    policy: None,
                };
                admin.create_account(request).await.unwrap();
                let mut ingest = common::api::ingest(addr, Some(INGEST_TOKEN)).await;
                common::api::deliver(&mut ingest, &["alice"], "k8s-1", &common::message("through the pod", 3))
                    .await
                    .unwrap();
            }),
            "pop3" => assert!(Client::connect(addr).greeting.starts_with("+OK")),
            "pop3s" => assert!(Client::connect_tls(addr, &pod.cert).greeting.starts_with("+OK")),
            "ops" => assert_eq!(pod.get(pod.ports["ops"], "/metrics"), 200),
            other => panic!("container port {other} is not covered by this test"),
        }
        answered.push(name);
    }
    // Every Service port leads to one of them.
    for service in objects.iter().filter(|o| o["kind"] == "Service") {
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = pod.port(&port["targetPort"]);
            assert!(pod.ports.values().any(|p| *p == target), "{}: targetPort {target}", service["metadata"]["name"]);
        }
    }

    // The `helm test` hook, run with its rendered arguments: each Service address becomes the pod
    // port that the Service's targetPort names.
    let hook =
        objects.iter().find(|o| o["kind"] == "Pod" && o["metadata"]["annotations"]["helm.sh/hook"] == "test").unwrap();
    let hook_args: Vec<String> = hook["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| {
            let arg = arg.as_str().unwrap();
            let Some(at) = arg.find(".mail.svc:") else { return arg.to_owned() };
            let start = arg[..at].rfind(['=', '/']).unwrap() + 1;
            let service = find(&objects, "Service", &arg[start..at]);
            let port: u64 = arg[at + ".mail.svc:".len()..].parse().unwrap();
            let spec = service["spec"]["ports"].as_array().unwrap().iter().find(|p| p["port"] == port).unwrap();
            format!("{}{}:{}", &arg[..start], pod.ip, pod.port(&spec["targetPort"]))
        })
        .collect();
    assert!(
        hook_args.iter().any(|a| a.starts_with("--pop3=")) && hook_args.iter().any(|a| a.starts_with("--api=")),
        "{hook_args:?}"
    );
    let out = Command::new(BIN).args(&hook_args).output().unwrap();
    assert!(out.status.success(), "helm test hook {hook_args:?} failed: {}", String::from_utf8_lossy(&out.stderr));

    // A session in TRANSACTION (STLS, as a client on the network would) that the drain must end.
    let mut session = Client::connect_stls(pod.addr("pop3"), &pod.cert);
    assert!(session.cmd("USER alice").starts_with("+OK"));
    assert!(session.cmd("PASS pod-secret").starts_with("+OK"));
    let (status, body) = session.multi("RETR 1");
    assert!(status.starts_with("+OK") && String::from_utf8_lossy(&body).contains("through the pod"), "{status}");

    // The kubelet: the preStop hook first (it only waits), then SIGTERM; the process must be gone
    // before terminationGracePeriodSeconds, counted from the start of the hook, runs out.
    let grace = spec_u64(&objects, "/spec/template/spec/terminationGracePeriodSeconds");
    let pre_stop = container.pointer("/lifecycle/preStop/sleep/seconds").and_then(Value::as_u64).unwrap();
    assert_eq!(grace, pre_stop + 3 + 5, "terminationGracePeriodSeconds = preStop + grace + 5");
    let hook = Instant::now();
    std::thread::sleep(Duration::from_secs(pre_stop)); // what the sleep hook does
    let ok = Command::new("kill").args(["-TERM", &pod.child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let ops = pod.ports["ops"];
    common::eventually("readiness did not drop at SIGTERM", || pod.get_or_zero(ops, "/readyz") == 503);
    assert!(session.cmd("NOOP").starts_with("+OK"), "an open session keeps working during the drain");
    let status = loop {
        if let Some(status) = pod.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            hook.elapsed() < Duration::from_secs(grace),
            "still running after terminationGracePeriodSeconds ({grace} s)"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let bye = session.line();
    assert!(bye.starts_with("-ERR [SYS/TEMP]"), "the drain ended the session without a reason: {bye:?}");
    assert!(session.is_closed(), "the session was not ended by the drain");
    assert_eq!(answered.len(), 4);
}

fn spec_u64(objects: &[Value], pointer: &str) -> u64 {
    find(objects, "Deployment", "cloudpop").pointer(pointer).and_then(Value::as_u64).unwrap()
}

impl Pod {
    /// The status of GET `path`, or 0 while nothing answers.
    fn get_or_zero(&self, port: u16, path: &str) -> u16 {
        let addr: SocketAddr = format!("{}:{port}", self.ip).parse().unwrap();
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(_) => common::http_get(addr, path).0,
            Err(_) => 0,
        }
    }
}
