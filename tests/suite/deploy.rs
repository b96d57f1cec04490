//! Structural checks of `deploy/`, the Kubernetes manifests, for what a schema cannot see.
//!
//! `.ci/validate-deploy.sh` validates the built-in kinds against the Kubernetes API schemas
//! and runs `rotor check` on the policy TOML. This file checks the rest offline: the required
//! fields of the custom resources (SecretProviderClass, ServiceMonitor, PrometheusRule), the
//! promises of the Deployment (two replicas on two nodes, RollingUpdate, the advertised URL
//! from the pod IP, the fingerprint key and tokens from one Secret shared by the replicas,
//! CSI volume read-only, no secret in an environment variable, locked-down
//! securityContext, probes), and every reference between objects: Deployment to
//! SecretProviderClass, Secret, ConfigMap TOML and image; Service, PodDisruptionBudget and
//! NetworkPolicy to the pod (which admits the other replica); ServiceMonitor to the
//! Service.
//!
//! And that the deployment is coherent with rotor's config: every SecretProviderClass
//! object marked rotor-managed reads a field of a view rotor writes (none reads a store
//! path); rotor's own classes mount only operator-managed files it reads, never a view it
//! writes (a pod mounting its own output could not start before its first promotion);
//! `deploy/vault/rotor.hcl` grants every request rotor makes for this config and no
//! write it never makes, which one test also proves on a real OpenBao; the Vault login's
//! token file is the Deployment's projected, audience-bound ServiceAccount token; and the
//! NetworkPolicy lets rotor reach Vault and PostgreSQL.
//!
//! And the example workload of `deploy/examples/` (a kustomize base of its own): its
//! `rotor agent` is a native sidecar with agent.toml from a generated ConfigMap and its
//! consumer token from a Secret file; every file the agent maps is a view field of that
//! very secret with its `NAME_version` beside it, in both example classes; and the
//! NetworkPolicies on both sides let the agent reach rotor's port.
//!
//! Each check is a function that returns the problems it found, so that the `catches_*`
//! tests can show that it fails on a broken copy of the manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::common::openbao::OpenBao;
use rotor::config::{Config, StoreConfig};
use serde::Deserialize;
use serde_json::{Value, json};

/// The CSI mount the seed's workloads and rotor's watcher agree on.
const SECRETS_MOUNT: &str = "/mnt/secrets";
const CSI_DRIVER: &str = "secrets-store.csi.k8s.io";

/// The files the seed mounts from its secret store (file names under /mnt/secrets).
const SEED_FILES: &[&str] = &[
    "database-username",
    "database-password",
    "database-url",
    "together-api-key",
    "openai-api-key",
    "supabase-url",
    "supabase-anon-key",
    "supabase-service-role-key",
    "jwt-secret",
    "redis-url",
    "slack-webhook-url",
];

/// The environment variables rotor reads. Anything else in the Deployment is a typo or
/// something that does not belong there.
const ROTOR_ENV: &[&str] = &[
    "SECRETS_MOUNT_PATH",
    "SECRETS_VOLUME_WATCH_ENABLED",
    "SECRETS_WATCH_POLL_INTERVAL",
    "ROTOR_CONFIG",
    "RUST_LOG",
    "POD_IP",
    "ROTOR_ADVERTISE_URL",
];

/// The Secret every replica reads the fingerprint key and the tokens from.
const KEYS_SECRET: &str = "rotor-keys";

/// The pod IP the literal environment stands in for `$(POD_IP)` (kubelet expands it).
const SAMPLE_POD_IP: &str = "10.0.0.7";

/// The seed's variables, which the issue requires the Deployment to set.
const REQUIRED_ENV: &[&str] = &[
    "SECRETS_MOUNT_PATH",
    "SECRETS_VOLUME_WATCH_ENABLED",
    "SECRETS_WATCH_POLL_INTERVAL",
];

/// Parts of an environment variable name that say it carries a secret.
const SECRET_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
    "PRIVATE",
    "WEBHOOK",
    "DSN",
    "DATABASE_URL",
    "REDIS_URL",
];

/// The alert rules come from the observability change, merged separately; until then this
/// is the one resource kustomization.yaml may list without the file existing.
const ALERTS: &str = "monitoring/prometheus-alerts.yaml";

// ---------------------------------------------------------------------------------------
// Loading

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every document of a YAML stream, empty ones dropped.
fn yaml_docs(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).map_err(|e| e.to_string())?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// One object of `deploy/`, with the file it came from (relative to `deploy/`).
struct Manifest {
    file: String,
    doc: Value,
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            out.push(path);
        }
    }
}

/// The example workload's kustomize base, inside `deploy/` but applied on its own.
const EXAMPLES: &str = "examples/";

/// Every object of rotor's own kustomize base: every YAML file under `deploy/` except the
/// kustomization files and the examples.
fn manifests() -> Vec<Manifest> {
    load_manifests(|file| !file.starts_with(EXAMPLES))
}

/// Every object of the example workload (`deploy/examples/`), the consumer token Secret
/// included.
fn example_manifests() -> Vec<Manifest> {
    load_manifests(|file| file.starts_with(EXAMPLES))
}

fn load_manifests(wanted: impl Fn(&str) -> bool) -> Vec<Manifest> {
    let root = deploy_dir();
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let file = rel(&root, &path);
        if file.ends_with("kustomization.yaml") || !wanted(&file) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        for doc in yaml_docs(&text).unwrap_or_else(|e| panic!("{file}: {e}")) {
            out.push(Manifest {
                file: file.clone(),
                doc,
            });
        }
    }
    assert!(!out.is_empty(), "no manifests under {}", root.display());
    out
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .expect("under deploy/")
        .to_string_lossy()
        .replace('\\', "/")
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

fn all_of<'a>(ms: &'a [Manifest], k: &str) -> Vec<&'a Value> {
    ms.iter().map(|m| &m.doc).filter(|d| kind(d) == k).collect()
}

/// The one object of kind `k`; there must be exactly one.
fn only<'a>(ms: &'a [Manifest], k: &str) -> &'a Value {
    let found = all_of(ms, k);
    assert_eq!(found.len(), 1, "expected exactly one {k} in deploy/");
    found[0]
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// True when every label the selector asks for is on `labels`; an empty selector selects
/// nothing here, because every selector in deploy/ is meant to name rotor's pod.
fn selects(match_labels: &Value, labels: &Value) -> bool {
    match match_labels.as_object() {
        Some(wanted) if !wanted.is_empty() => wanted.iter().all(|(k, v)| labels.get(k) == Some(v)),
        _ => false,
    }
}

fn pod_spec(dep: &Value) -> &Value {
    &dep["spec"]["template"]["spec"]
}

fn containers(dep: &Value) -> impl Iterator<Item = &Value> {
    items(&pod_spec(dep)["containers"])
        .iter()
        .chain(items(&pod_spec(dep)["initContainers"]))
}

fn main_container(dep: &Value) -> &Value {
    let all = items(&pod_spec(dep)["containers"]);
    assert_eq!(all.len(), 1, "rotor's pod has one container");
    &all[0]
}

/// Literal environment values of rotor's container, `$(POD_IP)` expanded as kubelet does
/// (to [`SAMPLE_POD_IP`]).
fn literal_env(dep: &Value) -> BTreeMap<String, String> {
    items(&main_container(dep)["env"])
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.replace("$(POD_IP)", SAMPLE_POD_IP),
            ))
        })
        .collect()
}

/// The container port a probe or Service names, by name or number.
fn container_port(container: &Value, port: &Value) -> Option<u64> {
    let ports = items(&container["ports"]);
    match port {
        Value::String(named) => ports
            .iter()
            .find(|p| p["name"].as_str() == Some(named))
            .and_then(|p| p["containerPort"].as_u64()),
        Value::Number(n) => ports
            .iter()
            .filter_map(|p| p["containerPort"].as_u64())
            .find(|p| Some(*p) == n.as_u64()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Checks: each returns what it found wrong

/// Replicas, strategy, securityContext, probes, resources and the CSI volume.
fn deployment_problems(dep: &Value, spc_names: &BTreeSet<String>) -> Vec<String> {
    let mut p = Vec::new();
    let spec = &dep["spec"];
    if spec["replicas"].as_u64().is_none_or(|n| n < 2) {
        p.push(format!(
            "replicas must be at least 2 (a leader and a follower that takes over), found {}",
            spec["replicas"]
        ));
    }
    if text(spec, "/strategy/type") != Some("RollingUpdate") {
        p.push(
            "strategy.type must be RollingUpdate: one replica keeps running during an update"
                .into(),
        );
    }
    // With a required anti-affinity, a surge pod finds no free node when the replicas fill
    // the nodes; one pod at a time is replaced instead.
    if spec["strategy"]["rollingUpdate"]["maxSurge"] != json!(0) {
        p.push("strategy.rollingUpdate.maxSurge must be 0 (required anti-affinity)".into());
    }
    let labels = &spec["template"]["metadata"]["labels"];
    let across_nodes = items(
        &pod_spec(dep)["affinity"]["podAntiAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"],
    )
    .iter()
    .any(|term| {
        term["topologyKey"] == json!("kubernetes.io/hostname")
            && selects(&term["labelSelector"]["matchLabels"], labels)
    });
    if !across_nodes {
        p.push("the pod needs a required podAntiAffinity on kubernetes.io/hostname selecting its own labels: two replicas on one node fail together".into());
    }
    if !selects(
        &spec["selector"]["matchLabels"],
        &spec["template"]["metadata"]["labels"],
    ) {
        p.push("selector.matchLabels does not select the pod template's labels".into());
    }

    let pod = pod_spec(dep);
    if pod["automountServiceAccountToken"] != json!(false) {
        p.push("automountServiceAccountToken must be false: rotor's Vault login uses a projected, audience-bound token".into());
    }
    let psc = &pod["securityContext"];
    if psc["runAsNonRoot"] != json!(true) {
        p.push("pod securityContext.runAsNonRoot must be true".into());
    }
    if matches!(psc["runAsUser"].as_u64(), None | Some(0)) {
        p.push(format!(
            "pod securityContext.runAsUser must be a non-zero uid, found {}",
            psc["runAsUser"]
        ));
    }

    for c in containers(dep) {
        p.extend(container_problems(c, psc, Some(ROTOR_ENV)));
    }

    let c = main_container(dep);
    p.extend(advertise_problems(c));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        if get["path"].as_str() != Some(path) {
            p.push(format!("{probe} must GET {path}, found {}", get["path"]));
        }
        if container_port(c, &get["port"]).is_none() {
            p.push(format!(
                "{probe} port {} is not a container port",
                get["port"]
            ));
        }
    }
    let env = literal_env(dep);
    for name in REQUIRED_ENV {
        if !env.contains_key(*name) {
            p.push(format!("env {name} is not set"));
        }
    }
    if env.get("SECRETS_MOUNT_PATH").map(String::as_str) != Some(SECRETS_MOUNT) {
        p.push(format!("env SECRETS_MOUNT_PATH must be {SECRETS_MOUNT}"));
    }

    // The CSI volume: one, read-only, naming a SecretProviderClass of deploy/, mounted
    // read-only at /mnt/secrets.
    let csi: Vec<&Value> = items(&pod["volumes"])
        .iter()
        .filter(|v| v["csi"]["driver"].as_str() == Some(CSI_DRIVER))
        .collect();
    match csi.as_slice() {
        [volume] => {
            if volume["csi"]["readOnly"] != json!(true) {
                p.push("the CSI volume must set csi.readOnly: true".into());
            }
            let class = text(volume, "/csi/volumeAttributes/secretProviderClass").unwrap_or("");
            if !spc_names.contains(class) {
                p.push(format!(
                    "the CSI volume names SecretProviderClass {class:?}, not one of {spc_names:?}"
                ));
            }
            let vname = &volume["name"];
            match items(&c["volumeMounts"])
                .iter()
                .find(|m| &m["name"] == vname)
            {
                Some(m) => {
                    if m["mountPath"].as_str() != Some(SECRETS_MOUNT) {
                        p.push(format!(
                            "the CSI volume must be mounted at {SECRETS_MOUNT}, found {}",
                            m["mountPath"]
                        ));
                    }
                    if m["readOnly"] != json!(true) {
                        p.push(format!("the mount at {SECRETS_MOUNT} must be readOnly"));
                    }
                }
                None => p.push("the CSI volume is not mounted in rotor's container".into()),
            }
        }
        other => p.push(format!(
            "expected one {CSI_DRIVER} volume, found {}",
            other.len()
        )),
    }
    p
}

/// The securityContext, resources and environment of one container; `psc` is the pod's
/// securityContext, `allowed_env` the variables the container may set (`None`: any name
/// that does not look like a secret).
fn container_problems(c: &Value, psc: &Value, allowed_env: Option<&[&str]>) -> Vec<String> {
    let mut p = Vec::new();
    let cname = c["name"].as_str().unwrap_or("?");
    let sc = &c["securityContext"];

    for (field, want) in [
        ("readOnlyRootFilesystem", true),
        ("allowPrivilegeEscalation", false),
        ("runAsNonRoot", true),
    ] {
        if sc[field] != json!(want) {
            p.push(format!(
                "container {cname}: securityContext.{field} must be {want}"
            ));
        }
    }
    if sc["privileged"] == json!(true) {
        p.push(format!("container {cname}: must not be privileged"));
    }
    if !items(&sc["capabilities"]["drop"]).contains(&json!("ALL")) {
        p.push(format!(
            "container {cname}: capabilities.drop must contain ALL"
        ));
    }
    if !items(&sc["capabilities"]["add"]).is_empty() {
        p.push(format!("container {cname}: must add no capability"));
    }
    let seccomp = text(sc, "/seccompProfile/type").or(text(psc, "/seccompProfile/type"));
    if seccomp != Some("RuntimeDefault") {
        p.push(format!(
            "container {cname}: seccompProfile must be RuntimeDefault"
        ));
    }
    for (what, res) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "cpu"),
        ("limits", "memory"),
    ] {
        if c["resources"][what][res].is_null() {
            p.push(format!(
                "container {cname}: resources.{what}.{res} is not set"
            ));
        }
    }
    p.extend(env_problems(c, allowed_env));
    p
}

/// `ROTOR_ADVERTISE_URL` is the pod's own address: `http://$(POD_IP):PORT` with `POD_IP`
/// from the downward API (`status.podIP`) and `PORT` a container port.
fn advertise_problems(c: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let env = items(&c["env"]);
    let pod_ip = env.iter().position(|e| {
        e["name"] == json!("POD_IP")
            && e["valueFrom"]["fieldRef"]["fieldPath"] == json!("status.podIP")
    });
    let advertise = env
        .iter()
        .position(|e| e["name"] == json!("ROTOR_ADVERTISE_URL"));
    match (pod_ip, advertise) {
        (Some(ip), Some(url)) => {
            // kubelet expands `$(POD_IP)` only from a variable defined before it.
            if ip > url {
                p.push("POD_IP must come before ROTOR_ADVERTISE_URL, which refers to it".into());
            }
            let value = env[url]["value"].as_str().unwrap_or("");
            let port = value
                .strip_prefix("http://$(POD_IP):")
                .and_then(|rest| rest.parse::<u64>().ok());
            if port.is_none_or(|port| container_port(c, &json!(port)).is_none()) {
                p.push(format!(
                    "ROTOR_ADVERTISE_URL must be http://$(POD_IP):<container port>, found {value:?}"
                ));
            }
        }
        _ => p.push("ROTOR_ADVERTISE_URL must be set from POD_IP (valueFrom.fieldRef status.podIP): the other replica forwards writes there".into()),
    }
    p
}

/// No secret reaches the container through its environment.
fn env_problems(container: &Value, allowed: Option<&[&str]>) -> Vec<String> {
    let mut p = Vec::new();
    let cname = container["name"].as_str().unwrap_or("?");
    for from in items(&container["envFrom"]) {
        if !from["secretRef"].is_null() {
            p.push(format!(
                "container {cname}: envFrom.secretRef puts a Secret in the environment"
            ));
        }
    }
    for e in items(&container["env"]) {
        let name = e["name"].as_str().unwrap_or("?");
        if !e["valueFrom"]["secretKeyRef"].is_null() {
            p.push(format!(
                "container {cname}: env {name} reads a Secret (valueFrom.secretKeyRef)"
            ));
        }
        let upper = name.to_ascii_uppercase();
        if let Some(word) = SECRET_WORDS.iter().find(|w| upper.contains(*w)) {
            p.push(format!(
                "container {cname}: env {name} looks like a secret ({word}); mount it as a file"
            ));
        }
        if let Some(allowed) = allowed
            && !allowed.contains(&name)
        {
            p.push(format!(
                "container {cname}: env {name} is not a variable rotor reads ({allowed:?})"
            ));
        }
    }
    p
}

/// The ConfigMap's TOML against the Deployment that runs it: valid with the Deployment's
/// environment, listening on the container port, the key and tokens from the shared Secret,
/// watching the CSI mount, draining within the grace period.
fn config_problems(dep: &Value, toml: &Path) -> Vec<String> {
    let env = literal_env(dep);
    let config = match Config::load_with_env(toml, &|name| env.get(name).cloned()) {
        Ok(config) => config,
        Err(errors) => {
            return vec![format!(
                "{} with the Deployment's env: {errors}",
                toml.display()
            )];
        }
    };
    let mut p = Vec::new();
    let c = main_container(dep);
    let pod = pod_spec(dep);

    if container_port(c, &json!("http")) != Some(u64::from(config.server.listen.port())) {
        p.push(format!(
            "server.listen {} is not the container port named http",
            config.server.listen
        ));
    }
    if !config.server.listen.ip().is_unspecified() {
        p.push(format!(
            "server.listen {} must be 0.0.0.0 in a pod",
            config.server.listen
        ));
    }

    // What must survive a restart: the embedded store and its master key, or with Vault
    // the key of the fingerprints the store recorded; and the admin token.
    let mut durable: Vec<(&str, &PathBuf)> = Vec::new();
    match &config.store {
        StoreConfig::Embedded {
            path,
            master_key_file,
        } => {
            durable.push(("store path", path));
            durable.push(("master key file", master_key_file));
        }
        StoreConfig::Vault(s) => durable.push(("master key file", &s.master_key_file)),
    }
    durable.push(("admin token file", &config.server.admin_token_file));
    // The agents hold a copy of the consumer token: one that changed with every pod
    // restart would lock them all out.
    if let Some(file) = &config.server.consumer_token_file {
        durable.push(("consumer token file", file));
    }
    for (what, file) in durable {
        // The deepest mount holding the file decides where it lives.
        let mount = items(&c["volumeMounts"])
            .iter()
            .filter(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|dir| file.starts_with(dir))
            })
            .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len));
        let Some(mount) = mount else {
            p.push(format!(
                "{what} {} is on the read-only root filesystem",
                file.display()
            ));
            continue;
        };
        // Every replica must hold the same key and tokens: rotor reads them, never creates
        // them (it would create a different one in each pod).
        if mount["readOnly"] != json!(true) {
            p.push(format!(
                "{what} {} is on a writable mount; with several replicas rotor must read it from the shared Secret, never create it",
                file.display()
            ));
        }
        if let Some(why) = from_shared_secret(pod, mount, file) {
            p.push(format!(
                "{what} {} does not come from the Secret {KEYS_SECRET} shared by every replica: {why}",
                file.display()
            ));
        }
    }

    match config.mounts.first() {
        Some(m) if m.path == Path::new(SECRETS_MOUNT) => {}
        other => p.push(format!(
            "the first watched mount must be {SECRETS_MOUNT}, found {:?}",
            other.map(|m| &m.path)
        )),
    }
    if !config.watch.enabled {
        p.push("watching is disabled; the CSI mount would never be watched".into());
    }
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    if config.runtime.shutdown_timeout.as_secs() >= grace {
        p.push(format!(
            "runtime.shutdown_timeout {:?} must be below terminationGracePeriodSeconds {grace}",
            config.runtime.shutdown_timeout
        ));
    }
    p
}

/// Why the file `file` below rotor's mount `mount` does not come from the Secret
/// [`KEYS_SECRET`], if it does not: the mount's volume must be an in-memory emptyDir that an
/// init container fills from a volume of that Secret holding the file's name.
fn from_shared_secret(pod: &Value, mount: &Value, file: &Path) -> Option<String> {
    let volumes = items(&pod["volumes"]);
    let volume = volumes.iter().find(|v| v["name"] == mount["name"])?;
    if volume["emptyDir"]["medium"] != json!("Memory") {
        return Some(format!(
            "volume {} must be an emptyDir in memory (medium: Memory), filled from the Secret",
            volume["name"]
        ));
    }
    let name = file.file_name()?.to_str()?;
    let secret_volume = volumes.iter().find(|v| {
        v["secret"]["secretName"] == json!(KEYS_SECRET)
            && (v["secret"]["items"].is_null()
                || items(&v["secret"]["items"])
                    .iter()
                    .any(|i| i["key"] == json!(name) && i["path"] == json!(name)))
    });
    let Some(secret_volume) = secret_volume else {
        return Some(format!(
            "no volume of the Secret {KEYS_SECRET} holds {name}"
        ));
    };
    let copies = items(&pod["initContainers"]).iter().any(|c| {
        let mounts = items(&c["volumeMounts"]);
        let source = mounts
            .iter()
            .find(|m| m["name"] == secret_volume["name"] && m["readOnly"] == json!(true));
        let target = mounts.iter().any(|m| m["name"] == volume["name"]);
        let command: Vec<&str> = items(&c["command"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        source.is_some_and(|m| {
            let from = format!("{}/{name}", m["mountPath"].as_str().unwrap_or(""));
            target && command.contains(&from.as_str())
        })
    });
    (!copies).then(|| {
        format!(
            "no init container copies {name} from the Secret's read-only mount into volume {}",
            volume["name"]
        )
    })
}

/// The config the Deployment runs, loaded with the Deployment's environment.
fn deployed_config(dep: &Value, toml: &Path) -> Config {
    let env = literal_env(dep);
    Config::load_with_env(toml, &|name| env.get(name).cloned())
        .unwrap_or_else(|e| panic!("{}: {e}", toml.display()))
}

/// The deepest volume mount of rotor's container holding `file`, with the file's path
/// inside it.
fn mount_of<'a>(dep: &'a Value, file: &Path) -> Option<(&'a Value, PathBuf)> {
    items(&main_container(dep)["volumeMounts"])
        .iter()
        .filter_map(|m| {
            let dir = m["mountPath"].as_str()?;
            let rest = file.strip_prefix(dir).ok()?;
            Some((m, rest.to_path_buf(), dir.len()))
        })
        .max_by_key(|(_, _, len)| *len)
        .map(|(m, rest, _)| (m, rest))
}

fn volume<'a>(dep: &'a Value, name: &Value) -> Option<&'a Value> {
    items(&pod_spec(dep)["volumes"])
        .iter()
        .find(|v| &v["name"] == name)
}

/// The Vault logins of the config (the store's and each view's own) against the pod: a
/// Kubernetes login's `token_file` must be a projected ServiceAccount token (the pod mounts
/// no default one) with an explicit audience and expiry, on a read-only mount; a
/// `ca_file` must be on a mount too.
fn vault_login_problems(dep: &Value, config: &Config) -> Vec<String> {
    let mut p = Vec::new();
    let mut logins: Vec<(String, &rotor::store::vault::VaultAuth)> = Vec::new();
    let mut ca_files: Vec<(String, &PathBuf)> = Vec::new();
    if let StoreConfig::Vault(s) = &config.store {
        logins.push(("store.auth".into(), &s.auth));
        if let Some(ca) = &s.ca_file {
            ca_files.push(("store.ca_file".into(), ca));
        }
    }
    for (i, view) in config.views.iter().enumerate() {
        logins.push((format!("publish[{i}].auth"), &view.auth));
        if let Some(ca) = &view.ca_file {
            ca_files.push((format!("publish[{i}].ca_file"), ca));
        }
    }
    for (key, auth) in logins {
        let rotor::store::vault::VaultAuth::Kubernetes { token_file, .. } = auth else {
            continue;
        };
        let shown = token_file.display();
        let Some((mount, rest)) = mount_of(dep, token_file) else {
            p.push(format!(
                "{key}.token_file {shown} is on no volume mount of rotor's container"
            ));
            continue;
        };
        if mount["readOnly"] != json!(true) {
            p.push(format!(
                "{key}.token_file {shown}: its mount {} must be readOnly",
                mount["mountPath"]
            ));
        }
        let sources =
            volume(dep, &mount["name"]).map_or(&[][..], |v| items(&v["projected"]["sources"]));
        let token = sources.iter().find(|s| {
            s["serviceAccountToken"]["path"].as_str().map(Path::new) == Some(rest.as_path())
        });
        let Some(token) = token.map(|s| &s["serviceAccountToken"]) else {
            p.push(format!(
                "{key}.token_file {shown} is not a projected serviceAccountToken of volume {}",
                mount["name"]
            ));
            continue;
        };
        if token["audience"].as_str().is_none_or(str::is_empty) {
            p.push(format!(
                "{key}.token_file {shown}: the projected token needs an explicit audience (the Vault role checks it)"
            ));
        }
        match token["expirationSeconds"].as_u64() {
            Some(s) if (600..=86_400).contains(&s) => {}
            other => p.push(format!(
                "{key}.token_file {shown}: expirationSeconds must be set, 600 to 86400, found {other:?}"
            )),
        }
    }
    for (key, ca) in ca_files {
        let shown = ca.display();
        let Some((mount, rest)) = mount_of(dep, ca) else {
            p.push(format!(
                "{key} {shown} is on no volume mount of rotor's container"
            ));
            continue;
        };
        let Some(v) = volume(dep, &mount["name"]) else {
            p.push(format!(
                "{key} {shown}: volume {} does not exist",
                mount["name"]
            ));
            continue;
        };
        let from_config_map = |cm: &Value| {
            items(&cm["items"])
                .iter()
                .any(|i| i["path"].as_str().map(Path::new) == Some(rest.as_path()))
        };
        let found = from_config_map(&v["configMap"])
            || items(&v["projected"]["sources"])
                .iter()
                .any(|s| from_config_map(&s["configMap"]));
        if !found {
            p.push(format!(
                "{key} {shown} is no item of a configMap in volume {}",
                mount["name"]
            ));
        }
    }
    p
}

/// Whether one NetworkPolicy egress rule allows TCP to `port`, and, when `namespace` is
/// given, names that namespace (or any destination).
fn egress_allows(np: &Value, port: u64, namespace: Option<&str>) -> bool {
    items(&np["spec"]["egress"]).iter().any(|rule| {
        let port_ok = items(&rule["ports"]).iter().any(|p| {
            p["port"].as_u64() == Some(port) && p["protocol"].as_str().unwrap_or("TCP") == "TCP"
        });
        let to = items(&rule["to"]);
        let dest_ok = to.is_empty()
            || namespace.is_none_or(|ns| {
                to.iter().any(|t| {
                    t["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str()
                        == Some(ns)
                })
            });
        port_ok && dest_ok
    })
}

/// rotor's egress: the Vault it logs into (the port of the store's and every view's
/// address; for an in-cluster `NAME.NAMESPACE.svc` host, that namespace) and the
/// PostgreSQL targets (5432: their address is in a file, not in the config).
fn network_problems(np: &Value, config: &Config) -> Vec<String> {
    let mut p = Vec::new();
    let mut addresses: Vec<&str> = config.views.iter().map(|v| v.address.as_str()).collect();
    if let StoreConfig::Vault(s) = &config.store {
        addresses.push(&s.address);
    }
    for address in addresses {
        let Ok(url) = url::Url::parse(address) else {
            p.push(format!("Vault address {address:?} does not parse"));
            continue;
        };
        let port = u64::from(url.port_or_known_default().unwrap_or(8200));
        let host = url.host_str().unwrap_or("");
        let labels: Vec<&str> = host.split('.').collect();
        let namespace = (labels.len() >= 3 && labels[2] == "svc").then(|| labels[1]);
        if !egress_allows(np, port, namespace) {
            p.push(format!(
                "NetworkPolicy: no egress rule lets rotor reach Vault at {address} (TCP {port}{})",
                namespace.map_or(String::new(), |ns| format!(" in namespace {ns}"))
            ));
        }
    }
    let postgres = config
        .secrets
        .iter()
        .any(|s| matches!(*s.target, rotor::target::TargetConfig::Postgres(_)));
    if postgres && !egress_allows(np, 5432, None) {
        p.push("NetworkPolicy: a postgres target needs egress to TCP 5432".into());
    }
    p
}

/// Whether rotor manages what an object of a SecretProviderClass mounts, as the comment
/// line above its group inside `objects` says (`# rotor-managed: ...` or
/// `# operator-managed: ...`); one per object, in order. An object under no such comment
/// counts as rotor-managed: then it must have a view, so nothing is left unsaid.
fn object_management(objects: &str) -> Vec<bool> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let top = objects
        .lines()
        .filter(|l| l.trim_start().starts_with("- "))
        .map(indent)
        .min()
        .unwrap_or(0);
    let mut rotor_managed = true;
    let mut out = Vec::new();
    for line in objects.lines() {
        let trimmed = line.trim_start();
        if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.trim_start();
            if comment.starts_with("operator-managed") {
                rotor_managed = false;
            } else if comment.starts_with("rotor-managed") {
                rotor_managed = true;
            }
        } else if trimmed.starts_with("- ") && indent(line) == top {
            out.push(rotor_managed);
        }
    }
    out
}

/// The fields a view document holds: each field and its `NAME_version`.
fn view_fields(view: &rotor::publish::config::VaultViewConfig) -> BTreeSet<String> {
    view.fields
        .keys()
        .flat_map(|f| [f.clone(), format!("{f}_version")])
        .collect()
}

/// Every object of a SecretProviderClass against the views of the config: a rotor-managed
/// object reads a field of a view (Vault: `secretPath` `{mount}/data/{path}` and a
/// `secretKey` the view writes; AWS: the secret named like the view's path, split with
/// `jmesPath` into fields the view writes, until the `aws` view type exists); an
/// operator-managed one reads neither a view (rotor would overwrite it) nor the store's
/// own paths (which hold versions before they are promoted).
fn spc_view_problems(spc: &Value, config: &Config) -> Vec<String> {
    let mut p = Vec::new();
    let id = format!("SecretProviderClass {}", name(spc));
    let provider = text(spc, "/spec/provider").unwrap_or("");
    let Some(raw) = text(spc, "/spec/parameters/objects") else {
        return vec![format!("{id}: parameters.objects is missing")];
    };
    let objects = match yaml_docs(raw) {
        Ok(docs) if docs.len() == 1 => docs[0].clone(),
        _ => return vec![format!("{id}: parameters.objects does not parse")],
    };
    let managed = object_management(raw);
    let objects = items(&objects);
    if managed.len() != objects.len() {
        p.push(format!(
            "{id}: found {} list items in objects' text but {} objects",
            managed.len(),
            objects.len()
        ));
    }
    let store_dir = match &config.store {
        StoreConfig::Vault(s) => Some(match s.path_prefix.trim_matches('/') {
            "" => format!("{}/data/_rotor/", s.mount),
            prefix => format!("{}/data/{prefix}/", s.mount),
        }),
        StoreConfig::Embedded { .. } => None,
    };
    for (i, object) in objects.iter().enumerate() {
        let rotor_managed = managed.get(i).copied().unwrap_or(true);
        let oname = object["objectName"].as_str().unwrap_or("?");
        match provider {
            "vault" => {
                let path = object["secretPath"].as_str().unwrap_or("");
                let key = object["secretKey"].as_str().unwrap_or("");
                let view = config
                    .views
                    .iter()
                    .find(|v| format!("{}/data/{}", v.mount, v.path) == path);
                if let Some(dir) = &store_dir
                    && path.starts_with(dir.as_str())
                {
                    p.push(format!("{id}: object {oname} reads {path}, a path of rotor's store, which holds versions before they are promoted: read a view"));
                }
                match (rotor_managed, view) {
                    (true, None) => p.push(format!(
                        "{id}: object {oname} (rotor-managed) reads {path}, which no [[publish]] type = \"vault\" view writes"
                    )),
                    (true, Some(v)) if !view_fields(v).contains(key) => p.push(format!(
                        "{id}: object {oname} reads field {key:?} of view {}, which writes {:?}",
                        v.name(),
                        view_fields(v)
                    )),
                    (false, Some(v)) => p.push(format!(
                        "{id}: object {oname} is marked operator-managed but reads view {}, which rotor writes",
                        v.name()
                    )),
                    _ => {}
                }
            }
            "aws" => {
                let view = config.views.iter().find(|v| v.path == oname);
                let splits = items(&object["jmesPath"]);
                match (rotor_managed, view) {
                    (true, None) => p.push(format!(
                        "{id}: object {oname} (rotor-managed) has no view of that name in rotor.toml"
                    )),
                    (true, Some(v)) => {
                        if splits.is_empty() {
                            p.push(format!("{id}: object {oname} (rotor-managed) must split the view's JSON with jmesPath: separate secrets could be read on either side of a rotation"));
                        }
                        let fields = view_fields(v);
                        for s in splits {
                            let path = s["path"].as_str().unwrap_or("");
                            if !fields.contains(path) {
                                p.push(format!(
                                    "{id}: object {oname}: jmesPath {path:?} is no field of view {}, which writes {fields:?}",
                                    v.name()
                                ));
                            }
                        }
                    }
                    (false, Some(v)) => p.push(format!(
                        "{id}: object {oname} is marked operator-managed but is named like view {}, which rotor writes",
                        v.name()
                    )),
                    (false, None) => {}
                }
            }
            _ => {}
        }
    }
    p
}

/// One `path "..." { capabilities = [...] }` rule of a Vault policy.
#[derive(Debug, Clone)]
struct PolicyRule {
    path: String,
    capabilities: BTreeSet<String>,
}

/// The rules of an HCL policy file, in order. Only the shape deploy/vault uses: `path`
/// blocks with a `capabilities` list, and `#` comments.
fn parse_policy(hcl: &str) -> Result<Vec<PolicyRule>, String> {
    let text: String = hcl
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rules = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("path") {
        rest = &rest[at + 4..];
        let open = rest.find('"').ok_or("path without a quoted name")?;
        let close = rest[open + 1..].find('"').ok_or("unterminated path name")? + open + 1;
        let path = rest[open + 1..close].to_owned();
        let body_start = rest[close..].find('{').ok_or("path without a block")? + close;
        let body_end = rest[body_start..].find('}').ok_or("unterminated block")? + body_start;
        let body = &rest[body_start + 1..body_end];
        let caps = body
            .split_once("capabilities")
            .and_then(|(_, c)| {
                let l = c.find('[')?;
                let r = c.find(']')?;
                Some(&c[l + 1..r])
            })
            .ok_or_else(|| format!("path {path:?} has no capabilities list"))?;
        let capabilities = caps
            .split(',')
            .map(|c| c.trim().trim_matches('"').to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        rules.push(PolicyRule { path, capabilities });
        rest = &rest[body_end + 1..];
    }
    Ok(rules)
}

/// Whether a policy path (with Vault's `+` segment and trailing `*` globs) matches a
/// request path.
fn policy_matches(pattern: &str, path: &str) -> bool {
    let (pattern, glob) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let mut pat = pattern.split('/').peekable();
    let mut req = path.split('/').peekable();
    loop {
        match (pat.next(), req.next()) {
            (None, None) => return true,
            (Some(last), Some(seg)) if pat.peek().is_none() => {
                // The last pattern segment may be a prefix under a glob.
                let seg_ok = if glob {
                    seg.starts_with(last)
                } else {
                    last == "+" || last == seg
                };
                return seg_ok && (glob || req.peek().is_none());
            }
            (Some(p), Some(seg)) if p == "+" || p == seg => continue,
            _ => return false,
        }
    }
}

/// The capabilities a policy grants on `path`: those of the matching rule Vault picks,
/// the most specific one (a later first wildcard, no trailing glob, fewer `+`, longer).
fn granted(rules: &[PolicyRule], path: &str) -> BTreeSet<String> {
    rules
        .iter()
        .filter(|r| policy_matches(&r.path, path))
        .max_by_key(|r| {
            let first_wild = r.path.find(['+', '*']).unwrap_or(r.path.len());
            (
                first_wild,
                !r.path.ends_with('*'),
                usize::MAX - r.path.matches('+').count(),
                r.path.len(),
            )
        })
        .map(|r| r.capabilities.clone())
        .unwrap_or_default()
}

/// What rotor asks of Vault with this config, as `(request path, capability, why)`: the
/// store's paths (values, state documents, the layout marker, the label mirror, the
/// listings, and the reads of the layout 1 migration) for every configured secret, each
/// view's document, and the token's own lookup and renewal.
fn vault_requests(config: &Config) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    let mut add = |path: String, caps: &[&'static str], why: &str| {
        for cap in caps {
            out.push((path.clone(), *cap, why.to_owned()));
        }
    };
    if let StoreConfig::Vault(s) = &config.store {
        let m = &s.mount;
        let prefix = s.path_prefix.trim_matches('/');
        let under = |rest: &str| {
            if prefix.is_empty() {
                rest.to_owned()
            } else {
                format!("{prefix}/{rest}")
            }
        };
        let dir = under("_rotor");
        let write = ["create", "read", "update"];
        add(
            format!("{m}/data/{dir}/_layout"),
            &write,
            "the layout marker",
        );
        add(format!("{m}/metadata/{dir}/"), &["list"], "listing tenants");
        add(
            format!("{m}/metadata/{}", under("")),
            &["list"],
            "the layout 1 migration lists the prefix",
        );
        for secret in &config.secrets {
            let (t, k) = (secret.secret.tenant(), secret.secret.key());
            add(
                format!("{m}/data/{dir}/{t}/{k}"),
                &write,
                "a secret's values",
            );
            add(
                format!("{m}/data/{dir}/{t}/{k}/_rotor"),
                &write,
                "a secret's state document",
            );
            add(
                format!("{m}/metadata/{dir}/{t}/{k}"),
                &write,
                "the label mirror",
            );
            add(
                format!("{m}/metadata/{dir}/{t}/"),
                &["list"],
                "listing keys",
            );
            let old = under(&format!("{t}/{k}"));
            add(
                format!("{m}/metadata/{}", under(&format!("{t}/"))),
                &["list"],
                "the layout 1 migration lists a tenant",
            );
            add(
                format!("{m}/metadata/{old}"),
                &["read"],
                "the layout 1 migration",
            );
            add(
                format!("{m}/data/{old}"),
                &["read"],
                "the layout 1 migration",
            );
            add(
                format!("{m}/data/{old}/_rotor"),
                &["read"],
                "the layout 1 migration",
            );
        }
        add(
            "auth/token/lookup-self".into(),
            &["read"],
            "the token's lookup",
        );
        add(
            "auth/token/renew-self".into(),
            &["update"],
            "the token's renewal",
        );
    }
    for view in &config.views {
        add(
            format!("{}/data/{}", view.mount, view.path),
            &["create", "read", "update"],
            &format!("view {}", view.name()),
        );
    }
    out
}

/// The policy grants everything rotor asks for and no more than it needs: no delete,
/// destroy, sudo or patch anywhere, and no write outside the store's `_rotor` folder and
/// the views (the paths of the layout 1 migration are read only; operator-managed
/// documents, `forbidden`, are not writable at all).
fn policy_problems(rules: &[PolicyRule], config: &Config, forbidden: &[String]) -> Vec<String> {
    let mut p = Vec::new();
    for (path, cap, why) in vault_requests(config) {
        if !granted(rules, &path).contains(cap) {
            p.push(format!(
                "the Vault policy does not grant {cap} on {path} ({why})"
            ));
        }
    }
    for rule in rules {
        for cap in ["delete", "destroy", "sudo", "patch"] {
            if rule.capabilities.contains(cap) {
                p.push(format!(
                    "the Vault policy grants {cap} on {}: rotor never needs it",
                    rule.path
                ));
            }
        }
    }
    let mut writes: Vec<String> = forbidden.to_vec();
    if let StoreConfig::Vault(s) = &config.store {
        let prefix = s.path_prefix.trim_matches('/');
        for secret in &config.secrets {
            let old = if prefix.is_empty() {
                secret.secret.to_string()
            } else {
                format!("{prefix}/{}", secret.secret)
            };
            writes.push(format!("{}/data/{old}", s.mount));
        }
    }
    for path in writes {
        let caps = granted(rules, &path);
        if caps.contains("create") || caps.contains("update") {
            p.push(format!(
                "the Vault policy lets rotor write {path}, which rotor never writes"
            ));
        }
    }
    p
}

/// The secretPaths of the Vault class's operator-managed objects.
fn operator_managed_paths(spc: &Value) -> Vec<String> {
    let raw = text(spc, "/spec/parameters/objects").unwrap_or("");
    let Ok(docs) = yaml_docs(raw) else {
        return Vec::new();
    };
    let managed = object_management(raw);
    docs.first()
        .map(items)
        .unwrap_or_default()
        .iter()
        .zip(managed)
        .filter(|(_, rotor)| !rotor)
        .filter_map(|(o, _)| o["secretPath"].as_str().map(str::to_owned))
        .collect()
}

/// The file names a SecretProviderClass writes into the volume, and its problems.
fn spc_problems(spc: &Value) -> (BTreeSet<String>, Vec<String>) {
    let mut p = Vec::new();
    let mut files = BTreeSet::new();
    let id = format!("SecretProviderClass {}", name(spc));
    if spc["apiVersion"].as_str() != Some("secrets-store.csi.x-k8s.io/v1") {
        p.push(format!(
            "{id}: apiVersion must be secrets-store.csi.x-k8s.io/v1"
        ));
    }
    let provider = text(spc, "/spec/provider").unwrap_or("");
    if provider != "vault" && provider != "aws" {
        p.push(format!(
            "{id}: spec.provider must be vault or aws, found {provider:?}"
        ));
    }
    let params = &spc["spec"]["parameters"];
    if provider == "vault" && params["roleName"].as_str().is_none_or(str::is_empty) {
        p.push(format!(
            "{id}: parameters.roleName (the Vault Kubernetes auth role) is missing"
        ));
    }
    // The provider reads `objects` as a YAML document inside a string.
    let objects = match params["objects"].as_str().map(yaml_docs) {
        Some(Ok(docs)) if docs.len() == 1 && !items(&docs[0]).is_empty() => docs[0].clone(),
        Some(Ok(_)) => {
            p.push(format!("{id}: parameters.objects is not a non-empty list"));
            return (files, p);
        }
        Some(Err(e)) => {
            p.push(format!("{id}: parameters.objects does not parse: {e}"));
            return (files, p);
        }
        None => {
            p.push(format!("{id}: parameters.objects (a string) is missing"));
            return (files, p);
        }
    };
    let required: &[&str] = match provider {
        "vault" => &["objectName", "secretPath", "secretKey"],
        _ => &["objectName", "objectType"],
    };
    for (i, object) in items(&objects).iter().enumerate() {
        for field in required {
            if object[*field].as_str().is_none_or(str::is_empty) {
                p.push(format!("{id}: objects[{i}].{field} is missing"));
            }
        }
        if provider == "aws" {
            let object_type = object["objectType"].as_str().unwrap_or("");
            if object_type != "secretsmanager" && object_type != "ssmparameter" {
                p.push(format!("{id}: objects[{i}].objectType {object_type:?} is not secretsmanager or ssmparameter"));
            }
        }
        // Vault names the file after objectName; AWS after objectAlias, else objectName
        // with `/` translated to `_`.
        let file = match (provider, object["objectAlias"].as_str()) {
            ("aws", Some(alias)) => alias.to_owned(),
            _ => object["objectName"]
                .as_str()
                .unwrap_or("")
                .replace('/', "_"),
        };
        if !files.insert(file.clone()) {
            p.push(format!("{id}: two objects write the file {file:?}"));
        }
        for alias in items(&object["jmesPath"])
            .iter()
            .filter_map(|j| j["objectAlias"].as_str())
        {
            files.insert(alias.to_owned());
        }
    }
    for secret in items(&spc["spec"]["secretObjects"]) {
        let sname = secret["secretName"].as_str().unwrap_or("?");
        if secret["secretName"].as_str().is_none() || secret["type"].as_str().is_none() {
            p.push(format!(
                "{id}: secretObjects entry {sname} needs secretName and type"
            ));
        }
        if items(&secret["data"]).is_empty() {
            p.push(format!("{id}: secretObjects entry {sname} has no data"));
        }
        for data in items(&secret["data"]) {
            let object = data["objectName"].as_str().unwrap_or("");
            if !files.contains(object) {
                p.push(format!(
                    "{id}: secret {sname} syncs objectName {object:?}, which no object mounts"
                ));
            }
            if data["key"].as_str().is_none_or(str::is_empty) {
                p.push(format!("{id}: secret {sname}: a data entry has no key"));
            }
        }
    }
    (files, p)
}

/// Service, PodDisruptionBudget and NetworkPolicy select rotor's pod and name its ports.
fn selector_problems(ms: &[Manifest]) -> Vec<String> {
    let mut p = Vec::new();
    let dep = only(ms, "Deployment");
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    let c = main_container(dep);

    let svc = only(ms, "Service");
    if !selects(&svc["spec"]["selector"], labels) {
        p.push("Service rotor does not select the pod".into());
    }
    for port in items(&svc["spec"]["ports"]) {
        if container_port(c, &port["targetPort"]).is_none() {
            p.push(format!(
                "Service targetPort {} is not a container port",
                port["targetPort"]
            ));
        }
    }
    let pdb = only(ms, "PodDisruptionBudget");
    if !selects(&pdb["spec"]["selector"]["matchLabels"], labels) {
        p.push("PodDisruptionBudget does not select the pod".into());
    }
    if pdb["spec"]["minAvailable"] != json!(1) || !pdb["spec"]["maxUnavailable"].is_null() {
        p.push("PodDisruptionBudget must say minAvailable: 1 (and no maxUnavailable): a drain never takes both replicas".into());
    }
    let np = only(ms, "NetworkPolicy");
    if !selects(&np["spec"]["podSelector"]["matchLabels"], labels) {
        p.push("NetworkPolicy does not select the pod".into());
    }
    // A follower forwards writes to the leader's pod IP on the container port: the other
    // replica must be let in, and out to it.
    let from_replica = items(&np["spec"]["ingress"]).iter().any(|rule| {
        items(&rule["from"]).iter().any(|f| {
            f["namespaceSelector"].is_null() && selects(&f["podSelector"]["matchLabels"], labels)
        }) && items(&rule["ports"])
            .iter()
            .any(|port| container_port(c, &port["port"]).is_some())
    });
    if !from_replica {
        p.push("NetworkPolicy ingress must admit the other rotor replica on the API port (forwarded writes)".into());
    }
    let to_replica = items(&np["spec"]["egress"]).iter().any(|rule| {
        items(&rule["to"]).iter().any(|t| {
            t["namespaceSelector"].is_null() && selects(&t["podSelector"]["matchLabels"], labels)
        }) && items(&rule["ports"])
            .iter()
            .any(|port| container_port(c, &port["port"]).is_some())
    });
    if !to_replica {
        p.push("NetworkPolicy egress must reach the other rotor replica on the API port (forwarded writes)".into());
    }
    for rule in items(&np["spec"]["ingress"]) {
        for port in items(&rule["ports"]) {
            if container_port(c, &port["port"]).is_none() {
                p.push(format!(
                    "NetworkPolicy ingress port {} is not a container port",
                    port["port"]
                ));
            }
        }
    }
    let sa = only(ms, "ServiceAccount");
    if pod_spec(dep)["serviceAccountName"].as_str() != Some(name(sa)) {
        p.push(format!(
            "the pod does not run as ServiceAccount {}",
            name(sa)
        ));
    }
    if sa["automountServiceAccountToken"] != json!(false) {
        p.push("ServiceAccount must set automountServiceAccountToken: false".into());
    }
    p
}

/// The ServiceMonitor selects the Service and scrapes a port it has at /metrics.
fn service_monitor_problems(sm: &Value, services: &[&Value]) -> Vec<String> {
    let mut p = Vec::new();
    let id = format!("ServiceMonitor {}", name(sm));
    let selector = &sm["spec"]["selector"]["matchLabels"];
    let matched: Vec<&&Value> = services
        .iter()
        .filter(|s| selects(selector, &s["metadata"]["labels"]))
        .collect();
    if matched.is_empty() {
        p.push(format!(
            "{id}: selector {selector} matches no Service's labels"
        ));
    }
    let endpoints = items(&sm["spec"]["endpoints"]);
    if endpoints.is_empty() {
        p.push(format!("{id}: no endpoints"));
    }
    for e in endpoints {
        let port = e["port"].as_str().unwrap_or("");
        let named = matched.iter().any(|s| {
            items(&s["spec"]["ports"])
                .iter()
                .any(|sp| sp["name"].as_str() == Some(port))
        });
        if !named {
            p.push(format!(
                "{id}: endpoint port {port:?} is not a named port of the selected Service"
            ));
        }
        if e["path"].as_str().unwrap_or("/metrics") != "/metrics" {
            p.push(format!(
                "{id}: endpoint path must be /metrics, found {}",
                e["path"]
            ));
        }
    }
    p
}

/// Groups with rules; every alert has an expression and a known severity.
fn prometheus_rule_problems(rule: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let id = format!("PrometheusRule {}", name(rule));
    if rule["apiVersion"].as_str() != Some("monitoring.coreos.com/v1") {
        p.push(format!("{id}: apiVersion must be monitoring.coreos.com/v1"));
    }
    let groups = items(&rule["spec"]["groups"]);
    if groups.is_empty() {
        p.push(format!("{id}: spec.groups is empty"));
    }
    for g in groups {
        let gname = g["name"].as_str().unwrap_or("");
        if gname.is_empty() {
            p.push(format!("{id}: a group has no name"));
        }
        let rules = items(&g["rules"]);
        if rules.is_empty() {
            p.push(format!("{id}: group {gname} has no rules"));
        }
        for r in rules {
            let alert = r["alert"].as_str();
            let label = alert.or(r["record"].as_str()).unwrap_or("?");
            if alert.is_none() && r["record"].as_str().is_none() {
                p.push(format!(
                    "{id}: group {gname}: a rule has neither alert nor record"
                ));
            }
            if r["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                p.push(format!("{id}: {label}: expr is missing"));
            }
            if alert.is_some() {
                let severity = r["labels"]["severity"].as_str().unwrap_or("");
                if !["critical", "warning", "info"].contains(&severity) {
                    p.push(format!("{id}: {label}: labels.severity {severity:?} is not critical, warning or info"));
                }
            }
        }
    }
    p
}

/// What the runtime stage must be, and the config path its entrypoint reads.
fn dockerfile_problems(dockerfile: &str) -> (Option<String>, Vec<String>) {
    let mut p = Vec::new();
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("FROM "))
        .collect();
    if froms.len() < 2 {
        p.push("the Dockerfile must be multi-stage (a build stage and a runtime stage)".into());
    }
    let runtime = &lines[froms.last().map_or(0, |i| *i)..];
    let user = runtime.iter().rev().find_map(|l| l.strip_prefix("USER "));
    let uid = user
        .and_then(|u| u.split(':').next())
        .and_then(|u| u.parse::<u32>().ok());
    if matches!(uid, None | Some(0)) {
        p.push(format!(
            "the runtime stage must set a numeric non-root USER, found {user:?}"
        ));
    }
    let copies: Vec<&&str> = runtime.iter().filter(|l| l.starts_with("COPY ")).collect();
    if copies.len() != 1 || !copies[0].starts_with("COPY --from=") {
        p.push(format!(
            "the runtime stage must copy the binary only, found {copies:?}"
        ));
    }
    if runtime.iter().any(|l| l.starts_with("RUN ")) {
        p.push("the runtime stage must not RUN anything: it ships the binary only".into());
    }
    if !runtime.contains(&"EXPOSE 8080") {
        p.push("the runtime stage must EXPOSE 8080".into());
    }
    let entrypoint = runtime
        .iter()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .and_then(|e| serde_json::from_str::<Vec<String>>(e).ok());
    let config = match entrypoint.as_deref() {
        Some([bin, run, flag, config, fmt, json])
            if bin == "rotor"
                && run == "run"
                && flag == "--config"
                && fmt == "--log-format"
                && json == "json" =>
        {
            Some(config.clone())
        }
        other => {
            p.push(format!(
                "ENTRYPOINT must be [\"rotor\",\"run\",\"--config\",FILE,\"--log-format\",\"json\"], found {other:?}"
            ));
            None
        }
    };
    (config, p)
}

fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn assert_found(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem mentioning {needle:?}, got {problems:#?}"
    );
}

fn spc_names(ms: &[Manifest]) -> BTreeSet<String> {
    all_of(ms, "SecretProviderClass")
        .into_iter()
        .map(|s| name(s).to_owned())
        .collect()
}

fn rotor_toml() -> PathBuf {
    deploy_dir().join("config/rotor.toml")
}

// ---------------------------------------------------------------------------------------
// The manifests as shipped

#[test]
fn kustomization_lists_every_manifest_and_only_existing_ones() {
    let root = deploy_dir();
    let text =
        std::fs::read_to_string(root.join("kustomization.yaml")).expect("kustomization.yaml");
    let k = yaml_docs(&text).expect("kustomization parses").remove(0);
    let listed: BTreeSet<String> = items(&k["resources"])
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let mut problems = Vec::new();
    for r in &listed {
        if !root.join(r).is_file() && r != ALERTS {
            problems.push(format!(
                "kustomization.yaml lists {r}, which does not exist"
            ));
        }
    }
    if !listed.contains(ALERTS) {
        problems.push(format!("kustomization.yaml must list {ALERTS}"));
    }
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    // promtool's plain rules file and its unit tests are not Kubernetes objects; they
    // live beside the PrometheusRule and are checked by tests/suite/monitoring.rs.
    let promtool_only =
        |f: &str| f.starts_with("monitoring/rules/") || f.starts_with("monitoring/tests/");
    for f in files.iter().map(|f| rel(&root, f)) {
        if f != "kustomization.yaml"
            && !promtool_only(&f)
            && !f.starts_with(EXAMPLES)
            && !listed.contains(&f)
        {
            problems.push(format!(
                "{f} is not a resource of kustomization.yaml; apply -k would skip it"
            ));
        }
    }
    let generated: Vec<&str> = items(&k["configMapGenerator"])
        .iter()
        .flat_map(|g| items(&g["files"]))
        .filter_map(Value::as_str)
        .collect();
    if !generated.contains(&"rotor.toml=config/rotor.toml") {
        problems.push(format!(
            "configMapGenerator must build rotor.toml from config/rotor.toml, found {generated:?}"
        ));
    }
    assert_none(problems);
}

/// kustomize reads no file outside deploy/, so the policy is a copy; it must not drift.
#[test]
fn configmap_toml_is_production_toml() {
    let shipped = std::fs::read_to_string(rotor_toml()).expect("deploy/config/rotor.toml");
    let production = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.toml"),
    )
    .expect("config/production.toml");
    assert!(
        shipped == production,
        "deploy/config/rotor.toml differs from config/production.toml: copy one onto the other"
    );
}

#[test]
fn deployment_keeps_its_promises() {
    let ms = manifests();
    assert_none(deployment_problems(
        only(&ms, "Deployment"),
        &spc_names(&ms),
    ));
}

#[test]
fn configmap_toml_fits_the_deployment() {
    let ms = manifests();
    assert_none(config_problems(only(&ms, "Deployment"), &rotor_toml()));
}

#[test]
fn deployment_mounts_the_configmap_where_the_image_reads_it() {
    let ms = manifests();
    let dep = only(&ms, "Deployment");
    let dockerfile =
        std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("deploy/Dockerfile");
    let (config_path, problems) = dockerfile_problems(&dockerfile);
    assert_none(problems);
    let config_path = PathBuf::from(config_path.expect("entrypoint names a config"));
    let pod = pod_spec(dep);
    let volume = items(&pod["volumes"])
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some("rotor-config"))
        .expect("a volume from ConfigMap rotor-config");
    let mount = items(&main_container(dep)["volumeMounts"])
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap volume is mounted");
    let dir = mount["mountPath"].as_str().expect("mountPath");
    assert_eq!(
        config_path,
        Path::new(dir).join("rotor.toml"),
        "the entrypoint's --config is not in the ConfigMap mount"
    );
    assert_eq!(
        literal_env(dep).get("ROTOR_CONFIG").map(PathBuf::from),
        Some(config_path)
    );
}

#[test]
fn service_pdb_and_network_policy_select_the_pod() {
    assert_none(selector_problems(&manifests()));
}

#[test]
fn service_monitor_scrapes_the_service() {
    let ms = manifests();
    let services = all_of(&ms, "Service");
    assert_none(service_monitor_problems(
        only(&ms, "ServiceMonitor"),
        &services,
    ));
}

/// Every PrometheusRule under deploy/ is checked. The alert file comes from the observability
/// change; where it exists there must be at least one rule, and it must be among them.
#[test]
fn prometheus_rules_have_alerts_with_expressions_and_severities() {
    let ms = manifests();
    let rules: Vec<&Manifest> = ms
        .iter()
        .filter(|m| kind(&m.doc) == "PrometheusRule")
        .collect();
    if deploy_dir().join(ALERTS).is_file() {
        assert!(
            rules.iter().any(|m| m.file == ALERTS),
            "{ALERTS} exists but holds no PrometheusRule"
        );
    }
    for m in rules {
        assert_none(prometheus_rule_problems(&m.doc));
    }
}

// ---------------------------------------------------------------------------------------
// The checks fail on broken manifests

fn deployment() -> (Value, BTreeSet<String>) {
    let ms = manifests();
    (only(&ms, "Deployment").clone(), spc_names(&ms))
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    *doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} exists")) = value;
}

#[test]
fn catches_one_replica_recreate_one_node_and_no_advertised_url() {
    let (mut dep, spcs) = deployment();
    set(&mut dep, "/spec/replicas", json!(1));
    set(&mut dep, "/spec/strategy", json!({"type": "Recreate"}));
    set(&mut dep, "/spec/template/spec/affinity", json!({}));
    let problems = deployment_problems(&dep, &spcs);
    assert_found(&problems, "replicas must be at least 2");
    assert_found(&problems, "RollingUpdate");
    assert_found(&problems, "maxSurge must be 0");
    assert_found(&problems, "podAntiAffinity on kubernetes.io/hostname");

    let (mut dep, spcs) = deployment();
    set(
        &mut dep,
        "/spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/0/topologyKey",
        json!("topology.kubernetes.io/zone"),
    );
    let env = dep
        .pointer_mut("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array_mut)
        .expect("env");
    for e in env.iter_mut() {
        if e["name"] == json!("ROTOR_ADVERTISE_URL") {
            e["value"] = json!("http://$(POD_IP):9999");
        }
    }
    let problems = deployment_problems(&dep, &spcs);
    assert_found(&problems, "podAntiAffinity on kubernetes.io/hostname");
    assert_found(&problems, "must be http://$(POD_IP):<container port>");

    let (mut dep, spcs) = deployment();
    let env = dep
        .pointer_mut("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array_mut)
        .expect("env");
    env.retain(|e| e["name"] != json!("POD_IP"));
    let problems = deployment_problems(&dep, &spcs);
    assert_found(&problems, "ROTOR_ADVERTISE_URL must be set from POD_IP");
}

#[test]
fn catches_a_writable_secrets_mount_and_an_unknown_provider_class() {
    let (mut dep, spcs) = deployment();
    let mounts = dep
        .pointer_mut("/spec/template/spec/containers/0/volumeMounts")
        .and_then(Value::as_array_mut)
        .expect("volumeMounts");
    for m in mounts
        .iter_mut()
        .filter(|m| m["mountPath"] == json!(SECRETS_MOUNT))
    {
        m["readOnly"] = json!(false);
    }
    let volumes = dep
        .pointer_mut("/spec/template/spec/volumes")
        .and_then(Value::as_array_mut)
        .expect("volumes");
    for v in volumes.iter_mut().filter(|v| !v["csi"].is_null()) {
        v["csi"]["volumeAttributes"]["secretProviderClass"] = json!("rotor-azure");
    }
    let problems = deployment_problems(&dep, &spcs);
    assert_found(&problems, "must be readOnly");
    assert_found(&problems, "rotor-azure");
}

#[test]
fn catches_secrets_in_environment_variables() {
    let (mut dep, spcs) = deployment();
    let env = dep
        .pointer_mut("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array_mut)
        .expect("env");
    env.push(json!({"name": "DB_PASSWORD", "value": "hunter2"}));
    env.push(json!({"name": "SLACK", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}));
    env.push(json!({"name": "SECRETS_WATCH_POLL_INTERVAL_MS", "value": "5000"}));
    dep["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
        json!([{"secretRef": {"name": "all"}}]);
    let problems = deployment_problems(&dep, &spcs);
    assert_found(&problems, "DB_PASSWORD looks like a secret");
    assert_found(&problems, "SLACK reads a Secret");
    assert_found(
        &problems,
        "SECRETS_WATCH_POLL_INTERVAL_MS is not a variable rotor reads",
    );
    assert_found(&problems, "envFrom.secretRef");
}

#[test]
fn catches_a_loose_security_context_and_wrong_probes() {
    let (mut dep, spcs) = deployment();
    let c = "/spec/template/spec/containers/0";
    set(
        &mut dep,
        &format!("{c}/securityContext"),
        json!({"runAsNonRoot": true, "capabilities": {"add": ["NET_ADMIN"]}}),
    );
    set(
        &mut dep,
        &format!("{c}/livenessProbe/httpGet/path"),
        json!("/health"),
    );
    set(
        &mut dep,
        &format!("{c}/readinessProbe/httpGet/port"),
        json!(9090),
    );
    set(
        &mut dep,
        "/spec/template/spec/securityContext/runAsUser",
        json!(0),
    );
    let problems = deployment_problems(&dep, &spcs);
    for needle in [
        "readOnlyRootFilesystem must be true",
        "allowPrivilegeEscalation must be false",
        "capabilities.drop must contain ALL",
        "must add no capability",
        "livenessProbe must GET /healthz",
        "readinessProbe port 9090",
        "non-zero uid",
    ] {
        assert_found(&problems, needle);
    }
}

#[test]
fn catches_keys_not_from_the_shared_secret_and_a_bad_env_value() {
    // The key on a volume of the pod's own (a claim, a disk emptyDir), written by rotor.
    let (mut dep, _) = deployment();
    for v in dep
        .pointer_mut("/spec/template/spec/volumes")
        .and_then(Value::as_array_mut)
        .expect("volumes")
        .iter_mut()
        .filter(|v| v["name"] == json!("data"))
    {
        *v = json!({"name": "data", "persistentVolumeClaim": {"claimName": "rotor-data"}});
    }
    for m in dep
        .pointer_mut("/spec/template/spec/containers/0/volumeMounts")
        .and_then(Value::as_array_mut)
        .expect("volumeMounts")
        .iter_mut()
        .filter(|m| m["name"] == json!("data"))
    {
        m["readOnly"] = json!(false);
    }
    let problems = config_problems(&dep, &rotor_toml());
    assert_found(
        &problems,
        "master key file /var/lib/rotor/master.key is on a writable mount",
    );
    assert_found(
        &problems,
        "consumer token file /var/lib/rotor/consumer.token does not come from the Secret rotor-keys",
    );
    // The Secret without the consumer token, and no init container copying.
    let (mut dep, _) = deployment();
    for v in dep
        .pointer_mut("/spec/template/spec/volumes")
        .and_then(Value::as_array_mut)
        .expect("volumes")
        .iter_mut()
        .filter(|v| v["secret"]["secretName"] == json!(KEYS_SECRET))
    {
        v["secret"]["items"]
            .as_array_mut()
            .expect("items")
            .retain(|i| i["key"] != json!("consumer.token"));
    }
    let problems = config_problems(&dep, &rotor_toml());
    assert_found(
        &problems,
        "no volume of the Secret rotor-keys holds consumer.token",
    );
    set(&mut dep, "/spec/template/spec/initContainers", json!([]));
    let problems = config_problems(&dep, &rotor_toml());
    assert_found(&problems, "no init container copies master.key");

    let (mut dep, _) = deployment();
    let env = dep
        .pointer_mut("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array_mut)
        .expect("env");
    for e in env
        .iter_mut()
        .filter(|e| e["name"] == json!("SECRETS_WATCH_POLL_INTERVAL"))
    {
        e["value"] = json!("5s");
    }
    let problems = config_problems(&dep, &rotor_toml());
    assert_found(&problems, "SECRETS_WATCH_POLL_INTERVAL");
}

#[test]
fn catches_broken_secret_provider_classes() {
    let ms = example_manifests();
    let mut vault = (*all_of(&ms, "SecretProviderClass")
        .into_iter()
        .find(|s| text(s, "/spec/provider") == Some("vault"))
        .expect("a vault class"))
    .clone();
    set(
        &mut vault,
        "/spec/parameters/objects",
        json!("- objectName: jwt-secret\n  secretPath: secret/data/rotor/jwt\n"),
    );
    set(
        &mut vault,
        "/spec/secretObjects/0/data/0/objectName",
        json!("db-user"),
    );
    let (_, problems) = spc_problems(&vault);
    assert_found(&problems, "objects[0].secretKey is missing");
    assert_found(
        &problems,
        "syncs objectName \"db-user\", which no object mounts",
    );

    set(&mut vault, "/spec/provider", json!("azure"));
    set(
        &mut vault,
        "/spec/parameters/objects",
        json!("objectName: [unclosed"),
    );
    let (_, problems) = spc_problems(&vault);
    assert_found(&problems, "spec.provider must be vault or aws");
    assert_found(&problems, "parameters.objects does not parse");

    let aws = json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "x"},
        "spec": {"provider": "aws", "parameters": {"objects": "- objectName: rotor/a\n  objectType: s3\n- objectName: rotor/a\n"}}
    });
    let (_, problems) = spc_problems(&aws);
    assert_found(&problems, "objectType \"s3\"");
    assert_found(&problems, "objects[1].objectType is missing");
    assert_found(&problems, "two objects write the file \"rotor_a\"");
}

#[test]
fn catches_a_service_monitor_that_scrapes_nothing() {
    let ms = manifests();
    let services = all_of(&ms, "Service");
    let mut sm = only(&ms, "ServiceMonitor").clone();
    set(&mut sm, "/spec/endpoints/0/port", json!("metrics"));
    assert_found(
        &service_monitor_problems(&sm, &services),
        "endpoint port \"metrics\"",
    );
    set(
        &mut sm,
        "/spec/selector/matchLabels",
        json!({"app": "other"}),
    );
    assert_found(
        &service_monitor_problems(&sm, &services),
        "matches no Service",
    );
}

#[test]
fn catches_selectors_that_miss_the_pod() {
    let mut ms = manifests();
    for m in ms.iter_mut().filter(|m| kind(&m.doc) == "Service") {
        set(
            &mut m.doc,
            "/spec/selector",
            json!({"app.kubernetes.io/name": "rotar"}),
        );
        set(&mut m.doc, "/spec/ports/0/targetPort", json!("metrics"));
    }
    for m in ms.iter_mut().filter(|m| kind(&m.doc) == "ServiceAccount") {
        set(&mut m.doc, "/automountServiceAccountToken", json!(true));
    }
    for m in ms
        .iter_mut()
        .filter(|m| kind(&m.doc) == "PodDisruptionBudget")
    {
        set(&mut m.doc, "/spec/minAvailable", json!(0));
    }
    for m in ms.iter_mut().filter(|m| kind(&m.doc) == "NetworkPolicy") {
        for dir in ["ingress", "egress"] {
            let rules = m.doc["spec"][dir].as_array_mut().expect("rules");
            rules.retain(|r| {
                !r.to_string().contains(
                    r#"{"podSelector":{"matchLabels":{"app.kubernetes.io/name":"rotor"}}}"#,
                )
            });
        }
    }
    let problems = selector_problems(&ms);
    assert_found(&problems, "Service rotor does not select the pod");
    assert_found(&problems, "targetPort \"metrics\"");
    assert_found(&problems, "automountServiceAccountToken: false");
    assert_found(&problems, "minAvailable: 1");
    assert_found(&problems, "ingress must admit the other rotor replica");
    assert_found(&problems, "egress must reach the other rotor replica");
}

#[test]
fn catches_alerts_without_severity_or_expression() {
    let rule = json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "r"},
        "spec": {"groups": [
            {"name": "rotor", "rules": [
                {"alert": "A", "expr": "up == 0", "labels": {"severity": "page"}},
                {"alert": "B", "labels": {"severity": "warning"}},
                {"expr": "1"}
            ]},
            {"name": "empty", "rules": []}
        ]}
    });
    let problems = prometheus_rule_problems(&rule);
    assert_found(&problems, "A: labels.severity \"page\"");
    assert_found(&problems, "B: expr is missing");
    assert_found(&problems, "neither alert nor record");
    assert_found(&problems, "group empty has no rules");
    assert_none(prometheus_rule_problems(&json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "ok"},
        "spec": {"groups": [{"name": "g", "rules": [
            {"alert": "A", "expr": "up == 0", "for": "5m", "labels": {"severity": "critical"}}
        ]}]}
    })));
}

#[test]
fn catches_a_root_image_that_ships_more_than_the_binary() {
    let bad = "FROM debian:trixie-slim\nCOPY . /app\nRUN apt-get update\nUSER root\nENTRYPOINT rotor run\n";
    let (config, problems) = dockerfile_problems(bad);
    assert!(config.is_none());
    for needle in [
        "multi-stage",
        "numeric non-root USER",
        "binary only",
        "must not RUN",
        "EXPOSE 8080",
        "ENTRYPOINT must be",
    ] {
        assert_found(&problems, needle);
    }
}

// ---------------------------------------------------------------------------------------
// The deployment is coherent: what the SecretProviderClasses mount is what rotor's views
// write, the Vault policy grants what rotor does, rotor can log in and reach Vault.

fn policy_rules(file: &str) -> Vec<PolicyRule> {
    let hcl = std::fs::read_to_string(deploy_dir().join("vault").join(file))
        .unwrap_or_else(|e| panic!("deploy/vault/{file}: {e}"));
    parse_policy(&hcl).unwrap_or_else(|e| panic!("deploy/vault/{file}: {e}"))
}

fn provider_class<'a>(ms: &'a [Manifest], provider: &str) -> &'a Value {
    all_of(ms, "SecretProviderClass")
        .into_iter()
        .find(|s| text(s, "/spec/provider") == Some(provider))
        .unwrap_or_else(|| panic!("a {provider} SecretProviderClass"))
}

/// The files of an AWS class that are whole JSON secrets split with jmesPath: the
/// provider writes them besides the split files, and the Vault class has no counterpart.
fn split_parents(spc: &Value) -> BTreeSet<String> {
    let objects = text(spc, "/spec/parameters/objects")
        .and_then(|o| yaml_docs(o).ok())
        .and_then(|d| d.into_iter().next())
        .unwrap_or(Value::Null);
    items(&objects)
        .iter()
        .filter(|o| !items(&o["jmesPath"]).is_empty())
        .filter_map(|o| o["objectAlias"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_deployed_config_uses_the_vault_store_and_views() {
    let ms = manifests();
    let config = deployed_config(only(&ms, "Deployment"), &rotor_toml());
    assert!(
        matches!(config.store, StoreConfig::Vault(_)),
        "deploy/config/rotor.toml must use [store] type = \"vault\""
    );
    assert!(
        !config.views.is_empty(),
        "deploy/config/rotor.toml publishes no Vault view"
    );
}

/// rotor's own classes and the workloads' (deploy/examples/): rotor's have no
/// rotor-managed object (rotor_mounts_only_operator_managed_files_it_reads), the
/// workloads' read the views, so there must be some to check.
#[test]
fn every_rotor_managed_object_reads_a_view_field() {
    let (ms, ex) = (manifests(), example_manifests());
    let config = deployed_config(only(&ms, "Deployment"), &rotor_toml());
    let mut rotor_managed = 0;
    for spc in all_of(&ms, "SecretProviderClass")
        .into_iter()
        .chain(all_of(&ex, "SecretProviderClass"))
    {
        assert_none(spc_view_problems(spc, &config));
        rotor_managed += object_management(text(spc, "/spec/parameters/objects").unwrap_or(""))
            .into_iter()
            .filter(|m| *m)
            .count();
    }
    assert!(
        rotor_managed > 0,
        "no SecretProviderClass in deploy/ mounts a view field: nothing to check"
    );
}

/// The Vault documents no rotor policy may write: the operator-managed objects of every
/// Vault class, rotor's own and the workloads'.
fn all_operator_managed_paths() -> Vec<String> {
    let (ms, ex) = (manifests(), example_manifests());
    let mut out: Vec<String> = all_of(&ms, "SecretProviderClass")
        .into_iter()
        .chain(all_of(&ex, "SecretProviderClass"))
        .filter(|s| text(s, "/spec/provider") == Some("vault"))
        .flat_map(operator_managed_paths)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn the_vault_policy_grants_what_rotor_does_and_no_more() {
    let ms = manifests();
    let config = deployed_config(only(&ms, "Deployment"), &rotor_toml());
    let forbidden = all_operator_managed_paths();
    assert!(
        forbidden.len() > 1,
        "the Vault classes mark too few operator-managed objects: {forbidden:?}"
    );
    assert_none(policy_problems(
        &policy_rules("rotor.hcl"),
        &config,
        &forbidden,
    ));
}

/// A CSI provider's policy against the Vault class it serves: read on every object's
/// document, nothing on the store's paths (which hold versions before they are promoted)
/// nor on `unreadable`, and no capability but read.
fn csi_policy_problems(
    file: &str,
    rules: &[PolicyRule],
    spc: &Value,
    config: &Config,
    unreadable: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    let objects = yaml_docs(text(spc, "/spec/parameters/objects").unwrap_or(""))
        .ok()
        .and_then(|d| d.into_iter().next())
        .unwrap_or(Value::Null);
    for o in items(&objects) {
        let path = o["secretPath"].as_str().unwrap_or("");
        if !granted(rules, path).contains("read") {
            problems.push(format!("{file} does not grant read on {path}"));
        }
    }
    let mut closed = unreadable.to_vec();
    if let StoreConfig::Vault(s) = &config.store {
        closed.push(format!(
            "{}/data/{}/_rotor/tenant1/key",
            s.mount, s.path_prefix
        ));
    }
    for path in closed {
        if !granted(rules, &path).is_empty() {
            problems.push(format!("{file} grants access to {path}"));
        }
    }
    for r in rules {
        if r.capabilities.iter().any(|c| c != "read") {
            problems.push(format!("{file} grants {:?} on {}", r.capabilities, r.path));
        }
    }
    problems
}

/// The Vault documents of the views rotor writes.
fn view_documents(config: &Config) -> Vec<String> {
    config
        .views
        .iter()
        .map(|v| format!("{}/data/{}", v.mount, v.path))
        .collect()
}

/// rotor's CSI policy reads its own operator-managed documents only (no view, so rotor's
/// pod could not mount one even by mistake); the workload's reads its class's documents
/// and not rotor's own admin URL.
#[test]
fn the_csi_policies_read_the_mounted_documents_only() {
    let (ms, ex) = (manifests(), example_manifests());
    let config = deployed_config(only(&ms, "Deployment"), &rotor_toml());
    let own = provider_class(&ms, "vault");
    assert_none(csi_policy_problems(
        "rotor-csi.hcl",
        &policy_rules("rotor-csi.hcl"),
        own,
        &config,
        &view_documents(&config),
    ));
    let hcl = std::fs::read_to_string(examples_dir().join("vault/app-csi.hcl"))
        .expect("examples/vault/app-csi.hcl");
    assert_none(csi_policy_problems(
        "app-csi.hcl",
        &parse_policy(&hcl).expect("app-csi.hcl parses"),
        provider_class(&ex, "vault"),
        &config,
        &operator_managed_paths(own),
    ));
}

#[test]
fn catches_a_csi_policy_that_reads_too_much() {
    let ms = manifests();
    let config = deployed_config(only(&ms, "Deployment"), &rotor_toml());
    let wide = parse_policy("path \"secret/data/rotor/*\" { capabilities = [\"read\", \"list\"] }")
        .expect("parses");
    let problems = csi_policy_problems(
        "rotor-csi.hcl",
        &wide,
        provider_class(&ms, "vault"),
        &config,
        &view_documents(&config),
    );
    assert_found(
        &problems,
        "rotor-csi.hcl grants access to secret/data/rotor/database",
    );
    assert_found(
        &problems,
        "grants {\"list\", \"read\"} on secret/data/rotor/*",
    );
    let none =
        parse_policy("path \"secret/data/other\" { capabilities = [\"read\"] }").expect("parses");
    assert_found(
        &csi_policy_problems(
            "rotor-csi.hcl",
            &none,
            provider_class(&ms, "vault"),
            &config,
            &[],
        ),
        "does not grant read on secret/data/rotor/postgres-admin",
    );
}

#[test]
fn rotor_logs_into_vault_with_a_projected_token() {
    let ms = manifests();
    let dep = only(&ms, "Deployment");
    let config = deployed_config(dep, &rotor_toml());
    assert_none(vault_login_problems(dep, &config));
}

#[test]
fn the_network_policy_lets_rotor_reach_vault_and_postgres() {
    let ms = manifests();
    let config = deployed_config(only(&ms, "Deployment"), &rotor_toml());
    assert_none(network_problems(only(&ms, "NetworkPolicy"), &config));
}

#[test]
fn catches_spc_objects_that_no_view_writes() {
    let config = deployed_config(only(&manifests(), "Deployment"), &rotor_toml());
    // The workloads' classes, which mount the views.
    let ms = example_manifests();

    // The deployment before views: the same objects, no markers, and no view in the config.
    let mut unmarked = provider_class(&ms, "vault").clone();
    let objects: String = text(&unmarked, "/spec/parameters/objects")
        .expect("objects")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    set(&mut unmarked, "/spec/parameters/objects", json!(objects));
    let mut no_views = config.clone();
    no_views.views.clear();
    let problems = spc_view_problems(&unmarked, &no_views);
    assert_found(
        &problems,
        "object database-password (rotor-managed) reads secret/data/rotor/database, which no [[publish]]",
    );
    assert_found(&problems, "object together-api-key (rotor-managed)");

    // A field the view does not write, a path no view writes, a store path, and an
    // operator-managed object that reads a view.
    let mut vault = provider_class(&ms, "vault").clone();
    let objects = text(&vault, "/spec/parameters/objects")
        .expect("objects")
        .replace("secretKey: password\n", "secretKey: passwd\n")
        .replace("secret/data/rotor/jwt\n", "secret/data/rotor/jwt-old\n")
        .replace(
            "secret/data/rotor/redis\n",
            "secret/data/rotor-store/_rotor/tenant1/redis\n",
        )
        .replace("secret/data/rotor/slack\n", "secret/data/rotor/database\n");
    set(&mut vault, "/spec/parameters/objects", json!(objects));
    let problems = spc_view_problems(&vault, &config);
    assert_found(
        &problems,
        "reads field \"passwd\" of view secret/rotor/database",
    );
    assert_found(&problems, "reads secret/data/rotor/jwt-old, which no");
    assert_found(&problems, "object redis-url reads secret/data/rotor-store/");
    assert_found(
        &problems,
        "object slack-webhook-url is marked operator-managed but reads view secret/rotor/database",
    );

    // AWS: a rotor-managed secret not split with jmesPath, or split into unknown fields.
    let mut aws = provider_class(&ms, "aws").clone();
    let objects = text(&aws, "/spec/parameters/objects")
        .expect("objects")
        .replace("path: password\n", "path: pass\n")
        .replace("- objectName: rotor/jwt\n", "- objectName: rotor/jwt-old\n");
    set(&mut aws, "/spec/parameters/objects", json!(objects));
    let problems = spc_view_problems(&aws, &config);
    assert_found(
        &problems,
        "jmesPath \"pass\" is no field of view secret/rotor/database",
    );
    assert_found(
        &problems,
        "object rotor/jwt-old (rotor-managed) has no view",
    );
    let mut unsplit = provider_class(&ms, "aws").clone();
    let objects = yaml_docs(text(&unsplit, "/spec/parameters/objects").expect("objects"))
        .expect("objects parse")
        .remove(0);
    let bare: Vec<Value> = items(&objects)
        .iter()
        .map(|o| {
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("jmesPath");
            }
            o
        })
        .collect();
    let mut text_objects = String::from("# rotor-managed: all\n");
    text_objects.push_str(&serde_norway::to_string(&bare).expect("yaml"));
    set(
        &mut unsplit,
        "/spec/parameters/objects",
        json!(text_objects),
    );
    assert_found(
        &spc_view_problems(&unsplit, &config),
        "object rotor/database (rotor-managed) must split the view's JSON with jmesPath",
    );
}

#[test]
fn catches_a_policy_that_misses_a_path_or_grants_too_much() {
    let ms = manifests();
    let config = deployed_config(only(&ms, "Deployment"), &rotor_toml());
    let forbidden = all_operator_managed_paths();
    let rules = policy_rules("rotor.hcl");

    let without = |pattern: &str| -> Vec<PolicyRule> {
        rules
            .iter()
            .filter(|r| r.path != pattern)
            .cloned()
            .collect()
    };
    let problems = policy_problems(
        &without("secret/metadata/rotor-store/_rotor/*"),
        &config,
        &forbidden,
    );
    assert_found(
        &problems,
        "does not grant update on secret/metadata/rotor-store/_rotor/tenant1/database_credentials (the label mirror)",
    );
    let problems = policy_problems(&without("secret/data/rotor/jwt"), &config, &forbidden);
    assert_found(
        &problems,
        "does not grant create on secret/data/rotor/jwt (view secret/rotor/jwt)",
    );
    let problems = policy_problems(
        &without("secret/metadata/rotor-store/*"),
        &config,
        &forbidden,
    );
    assert_found(
        &problems,
        "list on secret/metadata/rotor-store/ (the layout 1 migration",
    );
    let problems = policy_problems(&without("auth/token/renew-self"), &config, &forbidden);
    assert_found(&problems, "auth/token/renew-self");

    let mut loose = rules.clone();
    loose.push(PolicyRule {
        path: "secret/data/rotor/*".into(),
        capabilities: ["create", "update", "delete"].map(String::from).into(),
    });
    loose.push(PolicyRule {
        path: "secret/data/rotor-store/*".into(),
        capabilities: ["read", "update"].map(String::from).into(),
    });
    let problems = policy_problems(&loose, &config, &forbidden);
    assert_found(&problems, "grants delete on secret/data/rotor/*");
    assert_found(&problems, "lets rotor write secret/data/rotor/api-keys");
    assert_found(
        &problems,
        "lets rotor write secret/data/rotor-store/tenant1/database_credentials",
    );

    // The glob rules as Vault applies them: the most specific match wins.
    let rules = parse_policy(
        "path \"a/*\" { capabilities = [\"read\"] }\npath \"a/b/*\" { capabilities = [\"list\"] }\npath \"a/+/c\" { capabilities = [\"update\"] }\npath \"a/x/c\" { capabilities = [\"create\"] }",
    )
    .expect("parses");
    assert_eq!(
        granted(&rules, "a/b/c"),
        BTreeSet::from(["list".to_owned()])
    );
    assert_eq!(
        granted(&rules, "a/y/c"),
        BTreeSet::from(["update".to_owned()])
    );
    assert_eq!(
        granted(&rules, "a/x/c"),
        BTreeSet::from(["create".to_owned()])
    );
    assert_eq!(granted(&rules, "a/z"), BTreeSet::from(["read".to_owned()]));
    assert!(granted(&rules, "a").is_empty());
    assert!(granted(&rules, "ab/c").is_empty());
}

#[test]
fn catches_a_token_volume_that_does_not_match_the_config() {
    let (dep, _) = deployment();
    let config = deployed_config(&dep, &rotor_toml());
    let vault_volume = items(&pod_spec(&dep)["volumes"])
        .iter()
        .position(|v| !v["projected"].is_null())
        .expect("a projected volume");
    let token_source = items(&pod_spec(&dep)["volumes"][vault_volume]["projected"]["sources"])
        .iter()
        .position(|s| !s["serviceAccountToken"].is_null())
        .expect("a token source");
    let token = format!(
        "/spec/template/spec/volumes/{vault_volume}/projected/sources/{token_source}/serviceAccountToken"
    );

    let mut moved = dep.clone();
    set(&mut moved, &format!("{token}/path"), json!("jwt"));
    assert_found(
        &vault_login_problems(&moved, &config),
        "is not a projected serviceAccountToken",
    );

    let mut loose = dep.clone();
    let t = loose
        .pointer_mut(&token)
        .and_then(Value::as_object_mut)
        .expect("token");
    t.remove("audience");
    t.remove("expirationSeconds");
    let mounts = loose
        .pointer_mut("/spec/template/spec/containers/0/volumeMounts")
        .and_then(Value::as_array_mut)
        .expect("volumeMounts");
    for m in mounts.iter_mut().filter(|m| !m["readOnly"].is_null()) {
        m["readOnly"] = json!(false);
    }
    let problems = vault_login_problems(&loose, &config);
    assert_found(&problems, "needs an explicit audience");
    assert_found(&problems, "expirationSeconds must be set");
    assert_found(&problems, "must be readOnly");

    let mut gone = dep.clone();
    let volumes = gone
        .pointer_mut("/spec/template/spec/volumes")
        .and_then(Value::as_array_mut)
        .expect("volumes");
    volumes.remove(vault_volume);
    let problems = vault_login_problems(&gone, &config);
    assert_found(
        &problems,
        "store.auth.token_file /var/run/secrets/rotor/vault/token",
    );
    assert_found(&problems, "store.ca_file");
}

#[test]
fn catches_a_network_policy_that_allows_dns_only() {
    let ms = manifests();
    let config = deployed_config(only(&ms, "Deployment"), &rotor_toml());
    let mut np = only(&ms, "NetworkPolicy").clone();
    let egress = np
        .pointer_mut("/spec/egress")
        .and_then(Value::as_array_mut)
        .expect("egress");
    egress.truncate(1);
    let problems = network_problems(&np, &config);
    assert_found(
        &problems,
        "no egress rule lets rotor reach Vault at https://vault.vault.svc:8200 (TCP 8200 in namespace vault)",
    );
    assert_found(&problems, "TCP 5432");
}

// ---------------------------------------------------------------------------------------
// rotor's own pod mounts only what it needs and never a view it writes

/// Every path below the CSI mount that rotor's config names (a target's `admin_url_file`,
/// ...), as file names in the mount: rotor's own classes must mount each of them. Read
/// from the TOML text, so a key added later is covered without a change here.
fn files_rotor_reads(toml_path: &Path) -> BTreeSet<String> {
    fn walk(v: &toml::Value, out: &mut BTreeSet<String>) {
        match v {
            toml::Value::String(s) => {
                if let Some(file) = s
                    .strip_prefix(SECRETS_MOUNT)
                    .and_then(|r| r.strip_prefix('/'))
                {
                    out.insert(file.to_owned());
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            toml::Value::Table(t) => t.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(toml_path)
        .unwrap_or_else(|e| panic!("{}: {e}", toml_path.display()));
    let doc: toml::Value =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", toml_path.display()));
    let mut out = BTreeSet::new();
    walk(&doc, &mut out);
    out
}

/// One of rotor's own classes: every object is operator-managed and reads no view (the
/// CSI driver fails a mount until every object exists, and a view exists only after
/// rotor's first promotion, so a pod mounting its own output could not start), and every
/// file rotor's config reads below the mount is there.
fn own_class_problems(spc: &Value, config: &Config, needed: &BTreeSet<String>) -> Vec<String> {
    let id = format!("SecretProviderClass {}", name(spc));
    let mut p = spc_view_problems(spc, config);
    let raw = text(spc, "/spec/parameters/objects").unwrap_or("");
    let objects = yaml_docs(raw)
        .ok()
        .and_then(|d| d.into_iter().next())
        .unwrap_or(Value::Null);
    for (object, rotor_managed) in items(&objects).iter().zip(object_management(raw)) {
        if rotor_managed {
            p.push(format!(
                "{id}: object {} is rotor-managed, but rotor's own pod must mount no view it writes: the mount would fail until rotor's first promotion, so the pod could never start",
                object["objectName"].as_str().unwrap_or("?")
            ));
        }
    }
    let (files, problems) = spc_problems(spc);
    p.extend(problems);
    for file in needed {
        if !files.contains(file) {
            p.push(format!(
                "{id}: rotor.toml reads {SECRETS_MOUNT}/{file}, which this class does not mount"
            ));
        }
    }
    p
}

/// A policy that waits for a watched mount (`expire_after = "grace_and_consumers"`) must
/// have a mount that can show its secrets: otherwise every previous version waits the
/// whole `max_grace_extension`.
fn mount_gate_problems(config: &Config) -> Vec<String> {
    let mapped: BTreeSet<&rotor::domain::SecretRef> = config
        .mounts
        .iter()
        .flat_map(|m| m.files.values())
        .collect();
    config
        .secrets
        .iter()
        .filter(|s| {
            matches!(
                s.policy.expire_after,
                rotor::config::ExpireAfter::GraceAndConsumers { .. }
            )
        })
        .filter(|s| !mapped.contains(&s.secret))
        .map(|s| {
            format!(
                "policy {} of {} says expire_after = \"grace_and_consumers\", but no [[mounts]] maps {}: its previous version would always wait max_grace_extension (a secret with views is gated on them under \"grace\" already)",
                s.policy.name, s.secret, s.secret
            )
        })
        .collect()
}

#[test]
fn rotor_mounts_only_operator_managed_files_it_reads() {
    let ms = manifests();
    let config = deployed_config(only(&ms, "Deployment"), &rotor_toml());
    let needed = files_rotor_reads(&rotor_toml());
    assert!(
        needed.contains("postgres-admin-url"),
        "the deployed config reads no file below {SECRETS_MOUNT}: {needed:?}"
    );
    let spcs = all_of(&ms, "SecretProviderClass");
    let providers: BTreeSet<&str> = spcs
        .iter()
        .filter_map(|s| text(s, "/spec/provider"))
        .collect();
    assert_eq!(
        providers,
        BTreeSet::from(["aws", "vault"]),
        "one class per provider"
    );
    let mut mounted = Vec::new();
    for spc in &spcs {
        assert_none(own_class_problems(spc, &config, &needed));
        mounted.push(spc_problems(spc).0);
    }
    assert_eq!(
        mounted[0], mounted[1],
        "rotor's two classes mount different files"
    );
    assert_none(mount_gate_problems(&config));
}

#[test]
fn catches_rotor_mounting_a_view_or_missing_its_admin_url() {
    let ms = manifests();
    let config = deployed_config(only(&ms, "Deployment"), &rotor_toml());
    let needed = files_rotor_reads(&rotor_toml());
    let mut vault = provider_class(&ms, "vault").clone();
    let objects = "# rotor-managed: the view rotor/database\n- objectName: database-password\n  secretPath: secret/data/rotor/database\n  secretKey: password\n";
    set(&mut vault, "/spec/parameters/objects", json!(objects));
    let problems = own_class_problems(&vault, &config, &needed);
    assert_found(
        &problems,
        "object database-password is rotor-managed, but rotor's own pod must mount no view",
    );
    assert_found(
        &problems,
        "rotor.toml reads /mnt/secrets/postgres-admin-url, which this class does not mount",
    );

    // The shipped policy back on expire_after = "grace_and_consumers", with no mount that
    // maps the database credentials any more.
    let text = std::fs::read_to_string(rotor_toml())
        .expect("rotor.toml")
        .replace(
            "[policies.database_credentials]\n",
            "[policies.database_credentials]\nexpire_after = \"grace_and_consumers\"\n",
        );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rotor.toml");
    std::fs::write(&path, text).expect("write");
    let waiting = deployed_config(only(&ms, "Deployment"), &path);
    assert_found(
        &mount_gate_problems(&waiting),
        "policy database_credentials of tenant1/database_credentials says expire_after = \"grace_and_consumers\", but no [[mounts]] maps",
    );
}

// ---------------------------------------------------------------------------------------
// The example workload: its agent sidecar, what it watches, how it reaches rotor

/// The variables the agent sidecar reads.
const AGENT_ENV: &[&str] = &["POD_NAME", "RUST_LOG"];

/// The most a sidecar that runs in every pod may request.
const AGENT_MAX_CPU_MILLIS: u64 = 20;
const AGENT_MAX_MEMORY: u64 = 32 << 20;

fn examples_dir() -> PathBuf {
    deploy_dir().join(EXAMPLES)
}

fn example_kustomization() -> Value {
    let text = std::fs::read_to_string(examples_dir().join("kustomization.yaml"))
        .expect("deploy/examples/kustomization.yaml");
    yaml_docs(&text).expect("parses").remove(0)
}

/// The agent config, parsed as TOML (the `[agent]` model is the agent's own; this reads
/// the keys deploy/ depends on).
fn agent_toml() -> Value {
    let text =
        std::fs::read_to_string(examples_dir().join("agent.toml")).expect("examples/agent.toml");
    toml::from_str(&text).expect("agent.toml parses")
}

/// `configMapGenerator` of a kustomization: ConfigMap name to `(key, source file)`.
fn generated_config_maps(k: &Value) -> BTreeMap<String, Vec<(String, String)>> {
    items(&k["configMapGenerator"])
        .iter()
        .filter_map(|g| {
            let files = items(&g["files"])
                .iter()
                .filter_map(Value::as_str)
                .map(|f| match f.split_once('=') {
                    Some((key, source)) => (key.to_owned(), source.to_owned()),
                    None => (
                        Path::new(f)
                            .file_name()
                            .map_or(f.to_owned(), |n| n.to_string_lossy().into_owned()),
                        f.to_owned(),
                    ),
                })
                .collect();
            Some((g["name"].as_str()?.to_owned(), files))
        })
        .collect()
}

/// The deepest volume mount of `container` holding `file`, with the file's path inside it.
fn mount_in<'a>(container: &'a Value, file: &Path) -> Option<(&'a Value, PathBuf)> {
    items(&container["volumeMounts"])
        .iter()
        .filter_map(|m| {
            let dir = m["mountPath"].as_str()?;
            let rest = file.strip_prefix(dir).ok()?;
            Some((m, rest.to_path_buf(), dir.len()))
        })
        .max_by_key(|(_, _, len)| *len)
        .map(|(m, rest, _)| (m, rest))
}

/// The command line a container runs: `command` then `args`.
fn argv(c: &Value) -> Vec<&str> {
    items(&c["command"])
        .iter()
        .chain(items(&c["args"]))
        .filter_map(Value::as_str)
        .collect()
}

/// The config file of a `rotor agent` command line.
fn agent_config_path(c: &Value) -> Option<PathBuf> {
    let argv = argv(c);
    let (bin, rest) = argv.split_first()?;
    if Path::new(bin).file_name()? != "rotor" || rest.first() != Some(&"agent") {
        return None;
    }
    rest.windows(2)
        .find(|w| w[0] == "-c" || w[0] == "--config")
        .map(|w| PathBuf::from(w[1]))
}

/// `10m`, `0.5`, `1` as millicores.
fn cpu_millis(q: &Value) -> Option<u64> {
    let s = match q {
        Value::Number(n) => return n.as_f64().map(|f| (f * 1000.0) as u64),
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    match s.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => s.parse::<f64>().ok().map(|f| (f * 1000.0) as u64),
    }
}

/// `16Mi`, `1Gi`, `64M`, plain bytes.
fn memory_bytes(q: &Value) -> Option<u64> {
    let s = match q {
        Value::Number(n) => return n.as_u64(),
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    for (suffix, factor) in [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<u64>().ok().map(|n| n * factor);
        }
    }
    s.parse().ok()
}

/// The pod's agent sidecar: a native sidecar (an init container with `restartPolicy:
/// Always`) running the rotor image as `rotor agent -c FILE`, with FILE from the ConfigMap
/// that the kustomization generates from agent.toml; its consumer token a file of the
/// token Secret, read-only, not readable by others, mounted by the sidecar alone; POD_NAME
/// from the downward API when the config names no consumer_id; locked down and small. No
/// container of the pod takes a Secret through its environment.
fn sidecar_problems(
    dep: &Value,
    agent: &Value,
    generators: &BTreeMap<String, Vec<(String, String)>>,
    token_secret: &Value,
    rotor_image: &str,
) -> Vec<String> {
    let mut p = Vec::new();
    let pod = pod_spec(dep);
    let psc = &pod["securityContext"];
    let id = format!("Deployment {}", name(dep));
    if let Some(c) = items(&pod["containers"])
        .iter()
        .find(|c| agent_config_path(c).is_some())
    {
        p.push(format!(
            "{id}: container {} runs rotor agent as a regular container: make it an initContainer with restartPolicy: Always (a native sidecar, started before the app)",
            c["name"].as_str().unwrap_or("?")
        ));
    }
    let sidecars: Vec<&Value> = items(&pod["initContainers"])
        .iter()
        .filter(|c| agent_config_path(c).is_some())
        .collect();
    let [sidecar] = sidecars.as_slice() else {
        p.push(format!(
            "{id}: expected one initContainer running `rotor agent -c FILE`, found {}",
            sidecars.len()
        ));
        return p;
    };
    let sname = sidecar["name"].as_str().unwrap_or("?");
    if sidecar["restartPolicy"].as_str() != Some("Always") {
        p.push(format!(
            "{id}: initContainer {sname} needs restartPolicy: Always, or it must exit before the app starts"
        ));
    }
    let repo = |image: &str| -> String {
        match image.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo.to_owned(),
            _ => image.to_owned(),
        }
    };
    let image = sidecar["image"].as_str().unwrap_or("");
    if repo(image) != repo(rotor_image) {
        p.push(format!(
            "{id}: initContainer {sname} runs image {image:?}, not rotor's ({rotor_image:?})"
        ));
    }

    // The config file: from the ConfigMap generated from agent.toml.
    let config_path = agent_config_path(sidecar).unwrap_or_default();
    match mount_in(sidecar, &config_path) {
        None => p.push(format!(
            "{id}: {sname}'s config {} is on no volume mount",
            config_path.display()
        )),
        Some((mount, rest)) => {
            let cm = volume(dep, &mount["name"]).and_then(|v| v["configMap"]["name"].as_str());
            let from_agent_toml = cm.and_then(|cm| generators.get(cm)).is_some_and(|files| {
                files
                    .iter()
                    .any(|(key, source)| Path::new(key) == rest && source == "agent.toml")
            });
            if !from_agent_toml {
                p.push(format!(
                    "{id}: {sname}'s config {} is not agent.toml: its volume's ConfigMap {cm:?} is not generated with {}=agent.toml",
                    config_path.display(),
                    rest.display()
                ));
            }
        }
    }

    // The token: a file of the Secret, never the environment.
    let token_file = PathBuf::from(agent["agent"]["token_file"].as_str().unwrap_or(""));
    let token_volume = match mount_in(sidecar, &token_file) {
        None => {
            p.push(format!(
                "{id}: [agent] token_file {} is on no volume mount of {sname}",
                token_file.display()
            ));
            None
        }
        Some((mount, rest)) => {
            if mount["readOnly"] != json!(true) {
                p.push(format!(
                    "{id}: the mount of token_file {} must be readOnly",
                    token_file.display()
                ));
            }
            let v = volume(dep, &mount["name"]).cloned().unwrap_or(Value::Null);
            let secret = &v["secret"];
            if secret["secretName"].as_str() != Some(name(token_secret)) {
                p.push(format!(
                    "{id}: token_file {} is not from Secret {} (volume {})",
                    token_file.display(),
                    name(token_secret),
                    mount["name"]
                ));
            }
            let item = items(&secret["items"])
                .iter()
                .find(|i| i["path"].as_str().map(Path::new) == Some(rest.as_path()));
            let key = item.and_then(|i| i["key"].as_str());
            let in_secret = key.is_some_and(|k| {
                !token_secret["stringData"][k].is_null() || !token_secret["data"][k].is_null()
            });
            if !in_secret {
                p.push(format!(
                    "{id}: token_file {} is no item of a key of Secret {}",
                    token_file.display(),
                    name(token_secret)
                ));
            }
            let mode = item
                .and_then(|i| i["mode"].as_u64())
                .or(secret["defaultMode"].as_u64())
                .unwrap_or(0o644);
            if mode & 0o007 != 0 {
                p.push(format!(
                    "{id}: the token file's mode {mode:#o} lets others read it: 0400 or 0440"
                ));
            }
            Some(mount["name"].clone())
        }
    };
    for c in items(&pod["containers"]) {
        if let Some(v) = &token_volume
            && items(&c["volumeMounts"]).iter().any(|m| &m["name"] == v)
        {
            p.push(format!(
                "{id}: container {} mounts the consumer token; only the agent may",
                c["name"].as_str().unwrap_or("?")
            ));
        }
        p.extend(container_problems(c, psc, None));
    }

    if agent["agent"]["consumer_id"].is_null() {
        let pod_name = items(&sidecar["env"])
            .iter()
            .find(|e| e["name"] == json!("POD_NAME"));
        if pod_name.and_then(|e| text(e, "/valueFrom/fieldRef/fieldPath")) != Some("metadata.name")
        {
            p.push(format!(
                "{id}: {sname} needs POD_NAME from the downward API (fieldRef metadata.name): agent.toml names no consumer_id, so every pod would report under its hostname"
            ));
        }
    }
    p.extend(container_problems(sidecar, psc, Some(AGENT_ENV)));
    let requests = &sidecar["resources"]["requests"];
    if cpu_millis(&requests["cpu"]).is_none_or(|m| m > AGENT_MAX_CPU_MILLIS) {
        p.push(format!(
            "{id}: {sname} requests cpu {}: a sidecar in every pod requests at most {AGENT_MAX_CPU_MILLIS}m",
            requests["cpu"]
        ));
    }
    if memory_bytes(&requests["memory"]).is_none_or(|b| b > AGENT_MAX_MEMORY) {
        p.push(format!(
            "{id}: {sname} requests memory {}: a sidecar in every pod requests at most 32Mi",
            requests["memory"]
        ));
    }
    p
}

/// What each file of a SecretProviderClass holds: `(document, field, rotor-managed)`. The
/// document is a Vault `secretPath` or an AWS secret's name; the field a `secretKey` or a
/// `jmesPath` (none for a whole AWS secret).
fn spc_file_sources(spc: &Value) -> BTreeMap<String, (String, Option<String>, bool)> {
    let raw = text(spc, "/spec/parameters/objects").unwrap_or("");
    let objects = yaml_docs(raw)
        .ok()
        .and_then(|d| d.into_iter().next())
        .unwrap_or(Value::Null);
    let mut out = BTreeMap::new();
    for (o, managed) in items(&objects).iter().zip(object_management(raw)) {
        let oname = o["objectName"].as_str().unwrap_or("").to_owned();
        match text(spc, "/spec/provider") {
            Some("vault") => {
                let path = o["secretPath"].as_str().unwrap_or("").to_owned();
                let key = o["secretKey"].as_str().map(str::to_owned);
                out.insert(oname, (path, key, managed));
            }
            _ => {
                for j in items(&o["jmesPath"]) {
                    if let (Some(alias), Some(path)) =
                        (j["objectAlias"].as_str(), j["path"].as_str())
                    {
                        out.insert(
                            alias.to_owned(),
                            (oname.clone(), Some(path.to_owned()), managed),
                        );
                    }
                }
                let file = o["objectAlias"]
                    .as_str()
                    .map_or(oname.replace('/', "_"), str::to_owned);
                out.insert(file, (oname, None, managed));
            }
        }
    }
    out
}

/// The view a document of a class is: Vault by `{mount}/data/{path}`, AWS by the secret's
/// name (the view's path until the `aws` view type exists).
fn view_of<'a>(
    config: &'a Config,
    spc: &Value,
    document: &str,
) -> Option<&'a rotor::publish::config::VaultViewConfig> {
    let vault = text(spc, "/spec/provider") == Some("vault");
    config.views.iter().find(|v| {
        if vault {
            format!("{}/data/{}", v.mount, v.path) == document
        } else {
            v.path == document
        }
    })
}

/// `*` matches any run of characters, as the watcher's `critical` patterns do.
fn glob_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i))
                .any(|i| glob_matches(tail, &rest[i..]))
        }
    }
}

/// The agent's mounts against the pod and a class it may mount: each `[[mounts]] path` is
/// where the sidecar mounts the CSI volume that the app mounts too; each `files` entry is
/// a rotor-managed file that reads a field of a view holding that very secret, with its
/// `NAME_version` beside it reading the field's `_version`, and a critical pattern that
/// makes a change reload; the reload is HTTP to loopback on a port the app declares.
fn agent_mount_problems(dep: &Value, agent: &Value, spc: &Value, config: &Config) -> Vec<String> {
    let mut p = Vec::new();
    let id = format!("SecretProviderClass {}", name(spc));
    let pod = pod_spec(dep);
    let csi: Vec<&Value> = items(&pod["volumes"])
        .iter()
        .filter(|v| v["csi"]["driver"].as_str() == Some(CSI_DRIVER))
        .collect();
    let sidecar = items(&pod["initContainers"])
        .iter()
        .find(|c| agent_config_path(c).is_some());
    let apps: Vec<&Value> = items(&pod["containers"]).iter().collect();
    let mounted_at = |c: &Value, dir: &str| -> Option<String> {
        items(&c["volumeMounts"])
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(dir))
            .and_then(|m| m["name"].as_str().map(str::to_owned))
    };
    let sources = spc_file_sources(spc);
    let mounts = items(&agent["mounts"]);
    if mounts.is_empty() {
        p.push("agent.toml has no [[mounts]]".into());
    }
    for (i, m) in mounts.iter().enumerate() {
        let dir = m["path"].as_str().unwrap_or("");
        let volume = sidecar.and_then(|s| mounted_at(s, dir));
        match &volume {
            Some(v) if csi.iter().any(|c| c["name"].as_str() == Some(v)) => {
                if !apps.iter().any(|a| mounted_at(a, dir).as_ref() == Some(v)) {
                    p.push(format!(
                        "mounts[{i}].path {dir}: no app container mounts volume {v} there, so the agent would report files the app does not read"
                    ));
                }
            }
            _ => p.push(format!(
                "mounts[{i}].path {dir} is not where the agent sidecar mounts the CSI volume"
            )),
        }
        let critical: Vec<&str> = items(&m["critical"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let files = m["files"].as_object().cloned().unwrap_or_default();
        if files.is_empty() {
            p.push(format!(
                "mounts[{i}] maps no files: the agent would report no version"
            ));
        }
        for (file, secret) in &files {
            let secret = secret.as_str().unwrap_or("");
            if !critical.iter().any(|c| glob_matches(c, file)) {
                p.push(format!(
                    "mounts[{i}].files.{file} matches no critical pattern: a rotation would not reload the app"
                ));
            }
            let Some((document, field, managed)) = sources.get(file) else {
                p.push(format!(
                    "{id}: mounts no file {file} (mounts[{i}].files.{file})"
                ));
                continue;
            };
            if !managed {
                p.push(format!(
                    "{id}: file {file} is operator-managed: rotor publishes no version of it"
                ));
                continue;
            }
            let Some(view) = view_of(config, spc, document) else {
                p.push(format!(
                    "{id}: file {file} reads {document}, which no view of rotor.toml writes"
                ));
                continue;
            };
            let Some(field) = field else {
                p.push(format!(
                    "{id}: file {file} is the whole document {document}: map a field of it"
                ));
                continue;
            };
            match view.fields.get(field) {
                None => p.push(format!(
                    "{id}: file {file} reads {field:?}, no field of view {}",
                    view.name()
                )),
                Some(source) if source.secret.to_string() != secret => p.push(format!(
                    "{id}: file {file} holds {} (view {} field {field}), but agent.toml maps it to {secret}",
                    source.secret,
                    view.name()
                )),
                Some(_) => {}
            }
            let marker = format!("{file}_version");
            let want = format!("{field}_version");
            match sources.get(&marker) {
                None => p.push(format!(
                    "{id}: mounts no {marker} beside {file}: the agent could not tell which version the pod holds"
                )),
                Some((d, f, _)) if d != document || f.as_deref() != Some(want.as_str()) => {
                    p.push(format!(
                        "{id}: {marker} reads {d} field {f:?}, not {document} field {want:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        match m["reload"]["type"].as_str() {
            Some("http") => {
                let url = m["reload"]["url"].as_str().unwrap_or("");
                match url::Url::parse(url) {
                    Ok(u)
                        if matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) =>
                    {
                        let port = u64::from(u.port_or_known_default().unwrap_or(80));
                        if !apps
                            .iter()
                            .any(|a| container_port(a, &json!(port)).is_some())
                        {
                            p.push(format!(
                                "mounts[{i}].reload.url {url}: port {port} is no port of an app container"
                            ));
                        }
                    }
                    _ => p.push(format!(
                        "mounts[{i}].reload.url {url:?} must be http to 127.0.0.1 (the app in the same pod)"
                    )),
                }
            }
            Some("signal") if pod["shareProcessNamespace"] != json!(true) => p.push(format!(
                "mounts[{i}]: a signal reload needs shareProcessNamespace: true"
            )),
            Some(_) => {}
            None => p.push(format!(
                "mounts[{i}] has no reload: the app would keep its old credential"
            )),
        }
    }
    p
}

/// Whether a NetworkPolicy peer (`from`/`to` entry) covers pods labelled `labels` in
/// namespace `ns`, seen from a policy in namespace `own_ns`.
fn peer_covers(peer: &Value, labels: &Value, ns: &str, own_ns: &str) -> bool {
    if !peer["ipBlock"].is_null() {
        return false;
    }
    let ns_ok = match peer.get("namespaceSelector") {
        None => ns == own_ns,
        Some(sel) => match sel["matchLabels"].as_object() {
            None => sel["matchExpressions"].is_null(),
            Some(m) if m.is_empty() => true,
            Some(m) => m.len() == 1 && m.get("kubernetes.io/metadata.name") == Some(&json!(ns)),
        },
    };
    let pods_ok = match peer.get("podSelector") {
        None => true,
        Some(sel) => selects(&sel["matchLabels"], labels),
    };
    ns_ok && pods_ok
}

/// Whether a rule's ports admit TCP `port` of a container (by number or by its name).
fn rule_ports_admit(rule: &Value, container: Option<&Value>, port: u64) -> bool {
    let ports = items(&rule["ports"]);
    ports.is_empty()
        || ports.iter().any(|p| {
            p["protocol"].as_str().unwrap_or("TCP") == "TCP"
                && (p["port"].as_u64() == Some(port)
                    || container.is_some_and(|c| container_port(c, &p["port"]) == Some(port)))
        })
}

/// The agent reaches rotor: `[agent] rotor_url` names rotor's Service in rotor's namespace
/// on a port that leads to rotor's container; rotor's NetworkPolicy admits the workload's
/// pods on that container port; and, if a policy of the workload restricts its egress,
/// one lets it reach rotor's pods on that port and DNS.
fn agent_network_problems(
    agent: &Value,
    workload: &Value,
    workload_ns: &str,
    workload_policies: &[&Value],
    rotor: &[Manifest],
    rotor_ns: &str,
) -> Vec<String> {
    let mut p = Vec::new();
    let url_text = agent["agent"]["rotor_url"].as_str().unwrap_or("");
    let Ok(url) = url::Url::parse(url_text) else {
        return vec![format!("[agent] rotor_url {url_text:?} does not parse")];
    };
    let host: Vec<&str> = url.host_str().unwrap_or("").split('.').collect();
    if host.len() < 3 || host[2] != "svc" {
        return vec![format!(
            "[agent] rotor_url {url_text}: the host must be rotor's Service, SERVICE.NAMESPACE.svc"
        )];
    }
    if host[1] != rotor_ns {
        p.push(format!(
            "[agent] rotor_url {url_text} names namespace {}, but rotor runs in {rotor_ns}",
            host[1]
        ));
    }
    let dep = only(rotor, "Deployment");
    let rotor_container = main_container(dep);
    let rotor_labels = &dep["spec"]["template"]["metadata"]["labels"];
    let Some(svc) = all_of(rotor, "Service")
        .into_iter()
        .find(|s| name(s) == host[0])
    else {
        p.push(format!(
            "[agent] rotor_url {url_text}: rotor has no Service {}",
            host[0]
        ));
        return p;
    };
    let port = u64::from(url.port_or_known_default().unwrap_or(80));
    let target = items(&svc["spec"]["ports"])
        .iter()
        .find(|sp| sp["port"].as_u64() == Some(port))
        .and_then(|sp| container_port(rotor_container, &sp["targetPort"]));
    let Some(target) = target else {
        p.push(format!(
            "[agent] rotor_url {url_text}: Service {} has no port {port} leading to rotor's container",
            host[0]
        ));
        return p;
    };

    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    let np = only(rotor, "NetworkPolicy");
    let admitted = items(&np["spec"]["ingress"]).iter().any(|rule| {
        let from = items(&rule["from"]);
        (from.is_empty()
            || from
                .iter()
                .any(|peer| peer_covers(peer, labels, workload_ns, rotor_ns)))
            && rule_ports_admit(rule, Some(rotor_container), target)
    });
    if !admitted {
        p.push(format!(
            "NetworkPolicy {}: no ingress rule admits the pods of Deployment {} (namespace {workload_ns}) on rotor's port {target}",
            name(np),
            name(workload)
        ));
    }

    let restricting: Vec<&&Value> = workload_policies
        .iter()
        .filter(|np| selects(&np["spec"]["podSelector"]["matchLabels"], labels))
        .filter(|np| items(&np["spec"]["policyTypes"]).contains(&json!("Egress")))
        .collect();
    if !restricting.is_empty() {
        let rules: Vec<&Value> = restricting
            .iter()
            .flat_map(|np| items(&np["spec"]["egress"]))
            .collect();
        let to_rotor = rules.iter().any(|rule| {
            let to = items(&rule["to"]);
            (to.is_empty()
                || to
                    .iter()
                    .any(|peer| peer_covers(peer, rotor_labels, rotor_ns, workload_ns)))
                && rule_ports_admit(rule, None, target)
        });
        if !to_rotor {
            p.push(format!(
                "the workload's NetworkPolicies restrict its egress but none lets it reach rotor's pods in namespace {rotor_ns} on TCP {target}"
            ));
        }
        let dns = rules.iter().any(|rule| {
            items(&rule["ports"])
                .iter()
                .any(|p| p["port"].as_u64() == Some(53) && p["protocol"] == json!("UDP"))
        });
        if !dns {
            p.push(format!(
                "the workload's NetworkPolicies restrict its egress but allow no DNS (UDP 53): {} would not resolve",
                url.host_str().unwrap_or("")
            ));
        }
    }
    p
}

fn rotor_namespace() -> String {
    let text = std::fs::read_to_string(deploy_dir().join("kustomization.yaml"))
        .expect("kustomization.yaml");
    yaml_docs(&text).expect("parses")[0]["namespace"]
        .as_str()
        .expect("a namespace")
        .to_owned()
}

fn example_namespace() -> String {
    example_kustomization()["namespace"]
        .as_str()
        .expect("deploy/examples sets a namespace")
        .to_owned()
}

fn rotor_image(rotor: &[Manifest]) -> String {
    main_container(only(rotor, "Deployment"))["image"]
        .as_str()
        .expect("rotor's image")
        .to_owned()
}

#[test]
fn examples_kustomization_lists_every_manifest_but_the_token_secret() {
    let k = example_kustomization();
    let listed: BTreeSet<String> = items(&k["resources"])
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let mut problems = Vec::new();
    let ms = example_manifests();
    let files: BTreeSet<&str> = ms
        .iter()
        .map(|m| m.file.strip_prefix(EXAMPLES).unwrap_or(&m.file))
        .collect();
    for r in &listed {
        if !files.contains(r.as_str()) {
            problems.push(format!(
                "examples/kustomization.yaml lists {r}, which holds no object"
            ));
        }
    }
    for m in &ms {
        let f = m.file.strip_prefix(EXAMPLES).unwrap_or(&m.file);
        let secret = kind(&m.doc) == "Secret";
        if secret && listed.contains(f) {
            problems.push(format!(
                "{f}: the consumer token placeholder must not be a resource: applying it would overwrite the real token"
            ));
        }
        if !secret && !listed.contains(f) {
            problems.push(format!(
                "{f} is not a resource of examples/kustomization.yaml"
            ));
        }
    }
    if !generated_config_maps(&k)
        .values()
        .flatten()
        .any(|(_, source)| source == "agent.toml")
    {
        problems.push("examples/kustomization.yaml generates no ConfigMap from agent.toml".into());
    }
    assert_none(problems);
}

#[test]
fn the_agent_runs_as_a_native_sidecar_with_its_token_from_a_secret() {
    let ex = example_manifests();
    let generators = generated_config_maps(&example_kustomization());
    assert_none(sidecar_problems(
        only(&ex, "Deployment"),
        &agent_toml(),
        &generators,
        only(&ex, "Secret"),
        &rotor_image(&manifests()),
    ));
}

#[test]
fn the_agent_watches_the_mount_and_every_file_has_its_version() {
    let ex = example_manifests();
    let dep = only(&ex, "Deployment");
    let config = deployed_config(only(&manifests(), "Deployment"), &rotor_toml());
    let agent = agent_toml();
    // The class the Deployment names, and the other one an overlay may switch to.
    let spcs = all_of(&ex, "SecretProviderClass");
    let class = text(
        items(&pod_spec(dep)["volumes"])
            .iter()
            .find(|v| !v["csi"].is_null())
            .expect("a CSI volume"),
        "/csi/volumeAttributes/secretProviderClass",
    )
    .expect("a class");
    assert!(
        spcs.iter().any(|s| name(s) == class),
        "the workload's CSI volume names {class}, which deploy/examples does not define"
    );
    for spc in spcs {
        assert_none(agent_mount_problems(dep, &agent, spc, &config));
    }
}

#[test]
fn the_example_classes_mount_the_seed_files_from_views() {
    let ex = example_manifests();
    let config = deployed_config(only(&manifests(), "Deployment"), &rotor_toml());
    let spcs = all_of(&ex, "SecretProviderClass");
    let providers: BTreeSet<&str> = spcs
        .iter()
        .filter_map(|s| text(s, "/spec/provider"))
        .collect();
    assert_eq!(
        providers,
        BTreeSet::from(["aws", "vault"]),
        "one class per provider"
    );
    let mut mounted = Vec::new();
    for spc in &spcs {
        let (mut files, problems) = spc_problems(spc);
        assert_none(problems);
        assert_none(spc_view_problems(spc, &config));
        for parent in split_parents(spc) {
            files.remove(&parent);
        }
        let missing: Vec<&&str> = SEED_FILES.iter().filter(|f| !files.contains(**f)).collect();
        assert!(
            missing.is_empty(),
            "SecretProviderClass {} mounts none of {missing:?}",
            name(spc)
        );
        mounted.push(files);
    }
    assert_eq!(
        mounted[0], mounted[1],
        "the two example classes mount different files"
    );
}

#[test]
fn agents_reach_rotor_through_both_network_policies() {
    let ex = example_manifests();
    let policies = all_of(&ex, "NetworkPolicy");
    assert_none(agent_network_problems(
        &agent_toml(),
        only(&ex, "Deployment"),
        &example_namespace(),
        &policies,
        &manifests(),
        &rotor_namespace(),
    ));
}

#[test]
fn catches_a_sidecar_that_is_no_native_sidecar_or_takes_its_token_loosely() {
    let ex = example_manifests();
    let generators = generated_config_maps(&example_kustomization());
    let agent = agent_toml();
    let secret = only(&ex, "Secret");
    let image = rotor_image(&manifests());
    let dep = only(&ex, "Deployment").clone();
    let check = |d: &Value, a: &Value| sidecar_problems(d, a, &generators, secret, &image);

    // A regular container instead of a native sidecar.
    let mut regular = dep.clone();
    let mut sidecar = regular["spec"]["template"]["spec"]["initContainers"][0].clone();
    sidecar
        .as_object_mut()
        .expect("container")
        .remove("restartPolicy");
    regular["spec"]["template"]["spec"]["initContainers"] = json!([]);
    regular["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(sidecar.clone());
    let problems = check(&regular, &agent);
    assert_found(&problems, "runs rotor agent as a regular container");
    assert_found(
        &problems,
        "expected one initContainer running `rotor agent -c FILE`, found 0",
    );

    // An init container that is not restarted, another image, a hand-written ConfigMap.
    let mut plain = dep.clone();
    let s = "/spec/template/spec/initContainers/0";
    plain
        .pointer_mut(s)
        .and_then(Value::as_object_mut)
        .expect("sidecar")
        .remove("restartPolicy");
    set(&mut plain, &format!("{s}/image"), json!("busybox:1.36"));
    for v in plain
        .pointer_mut("/spec/template/spec/volumes")
        .and_then(Value::as_array_mut)
        .expect("volumes")
        .iter_mut()
        .filter(|v| !v["configMap"].is_null())
    {
        v["configMap"]["name"] = json!("agent-by-hand");
    }
    let problems = check(&plain, &agent);
    assert_found(&problems, "needs restartPolicy: Always");
    assert_found(&problems, "runs image \"busybox:1.36\"");
    assert_found(&problems, "is not agent.toml");

    // The token in the environment, a world-readable token file, the app mounting it,
    // no POD_NAME, and a sidecar that asks for as much as the app.
    let mut loose = dep.clone();
    let env = loose
        .pointer_mut(&format!("{s}/env"))
        .and_then(Value::as_array_mut)
        .expect("env");
    env.retain(|e| e["name"] != json!("POD_NAME"));
    env.push(json!({"name": "ROTOR_TOKEN", "valueFrom": {"secretKeyRef": {"name": "rotor-consumer-token", "key": "token"}}}));
    set(
        &mut loose,
        &format!("{s}/resources/requests/memory"),
        json!("128Mi"),
    );
    let token_volume = items(&pod_spec(&loose)["volumes"])
        .iter()
        .position(|v| !v["secret"].is_null())
        .expect("a secret volume");
    set(
        &mut loose,
        &format!("/spec/template/spec/volumes/{token_volume}/secret/defaultMode"),
        json!(0o644),
    );
    let token_name = loose["spec"]["template"]["spec"]["volumes"][token_volume]["name"].clone();
    loose["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({"name": token_name, "mountPath": "/token", "readOnly": true}));
    let problems = check(&loose, &agent);
    assert_found(&problems, "env ROTOR_TOKEN reads a Secret");
    assert_found(&problems, "mode 0o644 lets others read it");
    assert_found(&problems, "container app mounts the consumer token");
    assert_found(&problems, "needs POD_NAME from the downward API");
    assert_found(&problems, "requests memory \"128Mi\"");

    // The token file somewhere else than the Secret.
    let mut moved = agent.clone();
    moved["agent"]["token_file"] = json!("/etc/rotor-agent/token");
    assert_found(
        &check(&dep, &moved),
        "is not from Secret rotor-consumer-token",
    );
}

#[test]
fn catches_agent_files_without_a_version_or_view() {
    let ex = example_manifests();
    let dep = only(&ex, "Deployment").clone();
    let config = deployed_config(only(&manifests(), "Deployment"), &rotor_toml());
    let agent = agent_toml();
    let vault = provider_class(&ex, "vault").clone();
    let aws = provider_class(&ex, "aws").clone();

    // The version marker missing from both classes.
    let mut no_marker = vault.clone();
    let objects = text(&no_marker, "/spec/parameters/objects")
        .expect("objects")
        .replace(
            "- objectName: database-password_version\n",
            "- objectName: database-password-version\n",
        );
    set(&mut no_marker, "/spec/parameters/objects", json!(objects));
    assert_found(
        &agent_mount_problems(&dep, &agent, &no_marker, &config),
        "mounts no database-password_version beside database-password",
    );
    let mut aws_marker = aws.clone();
    let objects = text(&aws_marker, "/spec/parameters/objects")
        .expect("objects")
        .replace("- path: password_version\n", "- path: url_version\n");
    set(&mut aws_marker, "/spec/parameters/objects", json!(objects));
    assert_found(
        &agent_mount_problems(&dep, &agent, &aws_marker, &config),
        "database-password_version reads rotor/database field Some(\"url_version\"), not rotor/database field \"password_version\"",
    );

    // Files mapped to the wrong secret, to an operator-managed file, to nothing, and
    // outside the critical patterns; the mount elsewhere; a reload to another host.
    let mut wrong = agent.clone();
    let files = wrong["mounts"][0]["files"].as_object_mut().expect("files");
    files.insert("database-password".into(), json!("tenant1/jwt_secret"));
    files.insert("together-api-key".into(), json!("tenant1/api_keys"));
    files.insert("cache-password".into(), json!("tenant1/api_keys"));
    wrong["mounts"][0]["critical"] = json!(["database-*"]);
    let problems = agent_mount_problems(&dep, &wrong, &vault, &config);
    assert_found(
        &problems,
        "file database-password holds tenant1/database_credentials (view secret/rotor/database field password), but agent.toml maps it to tenant1/jwt_secret",
    );
    assert_found(&problems, "file together-api-key is operator-managed");
    assert_found(&problems, "mounts no file cache-password");
    assert_found(&problems, "files.jwt-secret matches no critical pattern");

    let mut elsewhere = agent.clone();
    elsewhere["mounts"][0]["path"] = json!("/mnt/other");
    elsewhere["mounts"][0]["reload"]["url"] = json!("http://app.app.svc:8081/-/reload");
    let problems = agent_mount_problems(&dep, &elsewhere, &vault, &config);
    assert_found(
        &problems,
        "mounts[0].path /mnt/other is not where the agent sidecar mounts the CSI volume",
    );
    assert_found(&problems, "must be http to 127.0.0.1");

    let mut other_port = agent.clone();
    other_port["mounts"][0]["reload"]["url"] = json!("http://127.0.0.1:9999/-/reload");
    assert_found(
        &agent_mount_problems(&dep, &other_port, &vault, &config),
        "port 9999 is no port of an app container",
    );
}

#[test]
fn catches_network_policies_that_keep_agents_from_rotor() {
    let ex = example_manifests();
    let rotor = manifests();
    let dep = only(&ex, "Deployment");
    let agent = agent_toml();
    let (ns, rotor_ns) = (example_namespace(), rotor_namespace());
    let policies: Vec<Value> = all_of(&ex, "NetworkPolicy").into_iter().cloned().collect();

    // rotor's ingress without the agents' rule.
    let mut closed = manifests();
    for m in closed
        .iter_mut()
        .filter(|m| kind(&m.doc) == "NetworkPolicy")
    {
        let ingress = m
            .doc
            .pointer_mut("/spec/ingress")
            .and_then(Value::as_array_mut)
            .expect("ingress");
        ingress.retain(|r| !r.to_string().contains("rotor.io/agent"));
    }
    let refs: Vec<&Value> = policies.iter().collect();
    assert_found(
        &agent_network_problems(&agent, dep, &ns, &refs, &closed, &rotor_ns),
        "no ingress rule admits the pods of Deployment app (namespace app) on rotor's port 8080",
    );

    // The workload's egress without rotor and without DNS.
    let mut cut: Vec<Value> = policies.clone();
    for np in &mut cut {
        if let Some(egress) = np.pointer_mut("/spec/egress").and_then(Value::as_array_mut) {
            egress
                .retain(|r| !r.to_string().contains("\"rotor\"") && !r.to_string().contains("53"));
        }
    }
    let refs: Vec<&Value> = cut.iter().collect();
    let problems = agent_network_problems(&agent, dep, &ns, &refs, &rotor, &rotor_ns);
    assert_found(
        &problems,
        "none lets it reach rotor's pods in namespace rotor on TCP 8080",
    );
    assert_found(&problems, "allow no DNS");

    // A rotor_url on another port, in another namespace, or not a Service.
    let refs: Vec<&Value> = policies.iter().collect();
    let mut url = agent.clone();
    url["agent"]["rotor_url"] = json!("http://rotor.rotor.svc:9090");
    assert_found(
        &agent_network_problems(&url, dep, &ns, &refs, &rotor, &rotor_ns),
        "Service rotor has no port 9090",
    );
    url["agent"]["rotor_url"] = json!("http://rotor.default.svc:8080");
    assert_found(
        &agent_network_problems(&url, dep, &ns, &refs, &rotor, &rotor_ns),
        "names namespace default, but rotor runs in rotor",
    );
    url["agent"]["rotor_url"] = json!("http://10.0.0.7:8080");
    assert_found(
        &agent_network_problems(&url, dep, &ns, &refs, &rotor, &rotor_ns),
        "the host must be rotor's Service",
    );
}

// ---------------------------------------------------------------------------------------
// The shipped policy on a real server

/// A request with a token other than the root one: `(status, body)`.
async fn bao_as(
    bao: &OpenBao,
    token: &str,
    method: &str,
    api: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http
        .request(method, format!("{}/v1/{api}", bao.address()))
        .header("X-Vault-Token", token);
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("OpenBao {api}: {e}"));
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// deploy/vault/rotor.hcl on a private OpenBao, with a token that holds that policy alone
/// (no `default`): the deployed store opens (token lookup, layout marker, and the
/// migration of a layout 1 secret, read from the old paths), stores and promotes two
/// versions of every secret a view names (values, state documents, the label mirror), both
/// views are written and then rewritten, the token renews itself; and writing an
/// operator-managed document or a layout 1 path, or deleting, is refused (403). Only the
/// address, the token and the CA differ from the shipped config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_policy_runs_the_store_and_the_views_on_openbao() {
    use rotor::domain::{Label, RotationId};
    use rotor::generator::SecretValue;
    use rotor::publish::vault::{Synced, ViewWriter};
    use rotor::store::vault::{VaultAuth, VaultStore};
    use rotor::store::{Commit, ReadValue as _, Store as _};
    use std::sync::Arc;

    let Some(bao) = OpenBao::start().await else {
        return;
    };
    let ms = manifests();
    let config = deployed_config(only(&ms, "Deployment"), &rotor_toml());
    let StoreConfig::Vault(shipped) = &config.store else {
        panic!("the deployed store is not Vault");
    };
    // The dev server has KV v2 at secret/; another mount is enabled here.
    let (status, mount) = bao
        .call("GET", &format!("sys/mounts/{}", shipped.mount), None)
        .await;
    if status != 200 || mount.pointer("/options/version").and_then(Value::as_str) != Some("2") {
        bao.enable_kv2(&shipped.mount).await;
    }
    let policy = std::fs::read_to_string(deploy_dir().join("vault/rotor.hcl")).expect("policy");
    let (status, body) = bao
        .call(
            "PUT",
            "sys/policies/acl/rotor",
            Some(json!({ "policy": policy })),
        )
        .await;
    assert!(
        status == 200 || status == 204,
        "writing the policy: {status} {body}"
    );
    let (status, body) = bao
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["rotor"], "no_default_policy": true, "ttl": "1h" })),
        )
        .await;
    assert_eq!(status, 200, "creating the token: {body}");
    let token = body
        .pointer("/auth/client_token")
        .and_then(Value::as_str)
        .expect("a client token")
        .to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).expect("token file");

    // A secret an older rotor kept directly below the prefix (layout 1): the open must
    // copy it below `_rotor` with the policy's read-only access to the old paths.
    let legacy = rotor::domain::SecretRef::new("tenant3", "encryption_key").expect("secret");
    let prefix = shipped.path_prefix.trim_matches('/');
    let old = format!("{}/data/{prefix}/{legacy}", shipped.mount);
    let (status, body) = bao
        .call(
            "POST",
            &old,
            Some(json!({ "data": { "value": "legacy-value", "rotor_rotation": "1" }, "options": { "cas": 0 } })),
        )
        .await;
    assert_eq!(status, 200, "layout 1 value: {body}");
    let legacy_meta = rotor::domain::VersionMeta {
        version: 1,
        rotation: RotationId(1),
        labels: vec![Label::Current],
        created_at: chrono::Utc::now(),
        promoted_at: Some(chrono::Utc::now()),
        expired_at: None,
        fingerprint: "layout-1".into(),
    };
    let doc = json!({
        "format": 1,
        "journal": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"legacy journal"),
        "versions": [legacy_meta],
        "history": [],
    });
    let (status, body) = bao
        .call(
            "POST",
            &format!("{old}/_rotor"),
            Some(json!({ "data": doc, "options": { "cas": 0 } })),
        )
        .await;
    assert_eq!(status, 200, "layout 1 state document: {body}");

    let mut settings = (**shipped).clone();
    settings.address = bao.address().to_owned();
    settings.ca_file = None;
    settings.master_key_file = dir.path().join("master.key");
    settings.auth = VaultAuth::Token {
        token_file: token_file.clone(),
    };
    let store = VaultStore::open(settings)
        .await
        .expect("the store opens with the shipped policy alone");

    let migrated = store
        .read_value(&legacy, 1)
        .await
        .expect("the layout 1 value, migrated");
    assert_eq!(migrated.expose(), b"legacy-value");
    assert_eq!(
        store.journal(&legacy).await.expect("journal").as_deref(),
        Some(&b"legacy journal"[..]),
        "the layout 1 state document, migrated"
    );

    // Two versions of each secret a view names, the second promoted over the first.
    let value_of = |secret: &rotor::domain::SecretRef, v: u64| -> String {
        match config
            .secrets
            .iter()
            .find(|s| &s.secret == secret)
            .map(|s| &*s.target)
        {
            Some(rotor::target::TargetConfig::Postgres(_)) => json!({
                "username": format!("app_{v}"),
                "password": format!("pw-{v}"),
                "url": format!("postgresql://app_{v}:pw-{v}@db:5432/app"),
            })
            .to_string(),
            _ => format!("{v:064x}"),
        }
    };
    let named: BTreeSet<rotor::domain::SecretRef> = config
        .views
        .iter()
        .flat_map(|v| v.fields.values().map(|f| f.secret.clone()))
        .collect();
    let views: Vec<ViewWriter> = config
        .views
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.address = bao.address().to_owned();
            v.ca_file = None;
            v.auth = VaultAuth::Token {
                token_file: token_file.clone(),
            };
            ViewWriter::new(Arc::new(v)).expect("a view writer")
        })
        .collect();
    let now = chrono::Utc::now();
    for version in [1u64, 2] {
        for secret in &named {
            let value = SecretValue::from_bytes(value_of(secret, version).into_bytes());
            store
                .put_version(secret, version, RotationId(version), &value, now)
                .await
                .unwrap_or_else(|e| panic!("put {secret} v{version}: {e}"));
            let labels: Vec<(u64, Label)> = if version == 1 {
                vec![(1, Label::Current)]
            } else {
                vec![(1, Label::Previous), (2, Label::Current)]
            };
            let journal = serde_json::to_vec(&labels).expect("journal");
            store
                .commit(
                    secret,
                    Commit {
                        journal: &journal,
                        labels: &labels,
                        history: None,
                        now,
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("commit {secret} v{version}: {e}"));
        }
        for view in &views {
            match view.sync(&store).await {
                Ok(Synced::Written { versions, .. }) => assert!(
                    versions.values().all(|v| *v == version),
                    "view {} wrote {versions:?}, not version {version}",
                    view.config().name()
                ),
                other => panic!("view {}: {other:?}", view.config().name()),
            }
        }
    }

    // What the CSI provider reads: the promoted values, each with its version.
    for view in &views {
        let c = view.config();
        let (status, body) = bao
            .call("GET", &format!("{}/data/{}", c.mount, c.path), None)
            .await;
        assert_eq!(status, 200, "reading view {}: {body}", c.name());
        for (field, source) in &c.fields {
            let whole = value_of(&source.secret, 2);
            let want = match &source.json_field {
                Some(f) => serde_json::from_str::<Value>(&whole).expect("json")[f]
                    .as_str()
                    .expect("text")
                    .to_owned(),
                None => whole,
            };
            assert_eq!(
                body.pointer(&format!("/data/data/{field}")),
                Some(&json!(want)),
                "{}: {field}",
                c.name()
            );
            assert_eq!(
                body.pointer(&format!("/data/data/{field}_version")),
                Some(&json!("2")),
                "{}: {field}_version",
                c.name()
            );
        }
    }
    // The label mirror is best effort in the store (a refused write is only logged), so
    // its landing is checked here.
    for secret in &named {
        let path = format!("{}/metadata/{prefix}/_rotor/{secret}", shipped.mount);
        let (status, body) = bao.call("GET", &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            body.pointer("/data/custom_metadata/rotor_current"),
            Some(&json!("2")),
            "{path}: the label mirror"
        );
    }
    let (status, body) = bao_as(
        &bao,
        &token,
        "POST",
        "auth/token/renew-self",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "renew-self with the policy alone: {body}");

    // Least privilege, on the server: operator-managed documents, layout 1 paths and
    // deletes are refused.
    let mut refused = all_operator_managed_paths();
    refused.push(format!(
        "{}/data/{prefix}/tenant1/database_credentials",
        shipped.mount
    ));
    for path in refused {
        let (status, body) = bao_as(
            &bao,
            &token,
            "POST",
            &path,
            Some(json!({ "data": { "x": "y" } })),
        )
        .await;
        assert_eq!(status, 403, "writing {path} must be refused: {body}");
    }
    let first = named.iter().next().expect("a secret");
    let path = format!("{}/metadata/{prefix}/_rotor/{first}", shipped.mount);
    let (status, body) = bao_as(&bao, &token, "DELETE", &path, None).await;
    assert_eq!(status, 403, "deleting {path} must be refused: {body}");
}
