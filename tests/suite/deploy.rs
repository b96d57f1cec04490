//! Structural checks of `deploy/`, the Kubernetes manifests, for what a schema cannot see.
//!
//! `.ci/validate-deploy.sh` validates the built-in kinds against the Kubernetes API schemas
//! and runs `rotor check` on the policy TOML. This file checks the rest offline: the required
//! fields of the custom resources (SecretProviderClass, ServiceMonitor, PrometheusRule), the
//! promises of the Deployment (one replica, Recreate, CSI volume read-only, no secret in an
//! environment variable, locked-down securityContext, probes), and every reference between
//! objects: Deployment to SecretProviderClass, claim, ConfigMap TOML and image; Service,
//! PodDisruptionBudget and NetworkPolicy to the pod; ServiceMonitor to the Service.
//!
//! Each check is a function that returns the problems it found, so that the `catches_*`
//! tests can show that it fails on a broken copy of the manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
];

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

/// Every object in every YAML file under `deploy/` except kustomization.yaml.
fn manifests() -> Vec<Manifest> {
    let root = deploy_dir();
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let file = rel(&root, &path);
        if file == "kustomization.yaml" {
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

/// Literal environment values of rotor's container.
fn literal_env(dep: &Value) -> BTreeMap<String, String> {
    items(&main_container(dep)["env"])
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
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
    if spec["replicas"].as_u64() != Some(1) {
        p.push(format!(
            "replicas must be 1 until leader election exists, found {}",
            spec["replicas"]
        ));
    }
    if text(spec, "/strategy/type") != Some("Recreate") {
        p.push("strategy.type must be Recreate: two rotors must never rotate at once".into());
    }
    if !selects(
        &spec["selector"]["matchLabels"],
        &spec["template"]["metadata"]["labels"],
    ) {
        p.push("selector.matchLabels does not select the pod template's labels".into());
    }

    let pod = pod_spec(dep);
    if pod["automountServiceAccountToken"] != json!(false) {
        p.push("automountServiceAccountToken must be false: nothing in the pod needs it".into());
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
        p.extend(env_problems(c));
    }

    let c = main_container(dep);
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

/// No secret reaches the container through its environment.
fn env_problems(container: &Value) -> Vec<String> {
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
        if !ROTOR_ENV.contains(&name) {
            p.push(format!(
                "container {cname}: env {name} is not a variable rotor reads ({ROTOR_ENV:?})"
            ));
        }
    }
    p
}

/// The ConfigMap's TOML against the Deployment that runs it: valid with the Deployment's
/// environment, listening on the container port, state on the claim, watching the CSI mount,
/// draining within the grace period.
fn config_problems(dep: &Value, toml: &Path, claims: &BTreeSet<String>) -> Vec<String> {
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

    let StoreConfig::Embedded {
        path,
        master_key_file,
    } = &config.store
    else {
        p.push("the deployed config uses the embedded store".to_owned());
        return p;
    };
    for (what, file) in [
        ("store path", path),
        ("master key file", master_key_file),
        ("admin token file", &config.server.admin_token_file),
    ] {
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
        if mount["readOnly"] == json!(true) {
            p.push(format!("{what} {} is on a read-only mount", file.display()));
        }
        let volume = items(&pod["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"]);
        let claim = volume.and_then(|v| text(v, "/persistentVolumeClaim/claimName"));
        match claim {
            Some(claim) if claims.contains(claim) => {}
            Some(claim) => p.push(format!("{what}: claim {claim} is not defined in deploy/")),
            // An emptyDir (or anything else) dies with the pod: a lost master key loses
            // every stored value.
            None => p.push(format!(
                "{what} {} is not on a PersistentVolumeClaim; it would not survive a restart",
                file.display()
            )),
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
    let np = only(ms, "NetworkPolicy");
    if !selects(&np["spec"]["podSelector"]["matchLabels"], labels) {
        p.push("NetworkPolicy does not select the pod".into());
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

fn claim_names(ms: &[Manifest]) -> BTreeSet<String> {
    all_of(ms, "PersistentVolumeClaim")
        .into_iter()
        .map(|c| name(c).to_owned())
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
        if f != "kustomization.yaml" && !promtool_only(&f) && !listed.contains(&f) {
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
    assert_none(config_problems(
        only(&ms, "Deployment"),
        &rotor_toml(),
        &claim_names(&ms),
    ));
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
fn secret_provider_classes_are_complete_and_agree() {
    let ms = manifests();
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
        let (files, problems) = spc_problems(spc);
        assert_none(problems);
        let missing: Vec<&&str> = SEED_FILES.iter().filter(|f| !files.contains(**f)).collect();
        assert!(
            missing.is_empty(),
            "SecretProviderClass {} mounts none of {missing:?}",
            name(spc)
        );
        mounted.push(files);
    }
    // Switching provider must not change what rotor sees under /mnt/secrets.
    assert_eq!(
        mounted[0], mounted[1],
        "the two classes mount different files"
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
fn catches_a_second_replica_and_a_rolling_update() {
    let (mut dep, spcs) = deployment();
    set(&mut dep, "/spec/replicas", json!(2));
    set(&mut dep, "/spec/strategy", json!({"type": "RollingUpdate"}));
    let problems = deployment_problems(&dep, &spcs);
    assert_found(&problems, "replicas must be 1");
    assert_found(&problems, "Recreate");
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
fn catches_the_master_key_on_an_empty_dir_and_a_bad_env_value() {
    let ms = manifests();
    let (mut dep, _) = deployment();
    let volumes = dep
        .pointer_mut("/spec/template/spec/volumes")
        .and_then(Value::as_array_mut)
        .expect("volumes");
    for v in volumes
        .iter_mut()
        .filter(|v| !v["persistentVolumeClaim"].is_null())
    {
        *v = json!({"name": v["name"].clone(), "emptyDir": {}});
    }
    let problems = config_problems(&dep, &rotor_toml(), &claim_names(&ms));
    assert_found(
        &problems,
        "master key file /var/lib/rotor/master.key is not on a PersistentVolumeClaim",
    );

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
    let problems = config_problems(&dep, &rotor_toml(), &claim_names(&ms));
    assert_found(&problems, "SECRETS_WATCH_POLL_INTERVAL");
}

#[test]
fn catches_broken_secret_provider_classes() {
    let ms = manifests();
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
    let problems = selector_problems(&ms);
    assert_found(&problems, "Service rotor does not select the pod");
    assert_found(&problems, "targetPort \"metrics\"");
    assert_found(&problems, "automountServiceAccountToken: false");
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
