//! The deployment files under `deploy/` held against the binary they deploy: the Kubernetes
//! manifests (commands, ports, probe paths, environment variable names, shutdown timing, security
//! settings), the Grafana dashboard and the Prometheus alerts (every metric name, its type and the
//! labels it is filtered on).
//!
//! Metric names are checked against what `api`, `worker` and `scheduler` processes started from the
//! manifests really expose at `/metrics` after some work: requests, jobs and a scheduled task. Two
//! counters appear only after work this test cannot cheaply cause, a case breaching its SLA
//! (`docket_sla_breaches_total`) and an LLM call (`docket_llm_tokens_total`); those are checked
//! against the metrics registered in `src/` instead (see [`ONLY_IN_SOURCE`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::support::{self, Backend, TestDatabase, free_port};
use super::{Process, run, text};

/// Referenced metrics that need rare activity to appear at `/metrics`, and why.
const ONLY_IN_SOURCE: &[(&str, &str)] = &[
    (
        "docket_sla_breaches_total",
        "created by the scheduler's SLA sweep when a case breaches its SLA",
    ),
    (
        "docket_llm_tokens_total",
        "created when an llm.* pipeline step gets an answer from an LLM API",
    ),
];

/// Labels Prometheus attaches when scraping (target labels), not the process.
const TARGET_LABELS: &[&str] = &["instance", "job", "namespace", "pod"];

/// A valid production signing key for running the binary with the example configuration.
const TEST_SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn deploy_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(relative)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file, as JSON values.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let source = read(path);
    serde_norway::Deserializer::from_str(&source)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|document| !document.is_null())
        .collect()
}

fn string<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} must be a string, got {value}"))
}

/// A map whose values must all be strings (ConfigMap data, Secret stringData, labels).
fn string_map(value: &Value, what: &str) -> BTreeMap<String, String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{what} must be a map, got {value}"))
        .iter()
        .map(|(k, v)| (k.clone(), string(v, &format!("{what}.{k}")).to_owned()))
        .collect()
}

fn is_subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// The objects that `deploy/kubernetes/kustomization.yaml` ties together.
struct Manifests {
    objects: Vec<Value>,
}

impl Manifests {
    fn load() -> Self {
        let dir = deploy_path("kubernetes");
        let kustomization = yaml_documents(&dir.join("kustomization.yaml"));
        let listed: BTreeSet<String> = kustomization[0]["resources"]
            .as_array()
            .expect("kustomization.yaml has resources")
            .iter()
            .map(|r| string(r, "a resource").to_owned())
            .collect();
        let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
            .expect("deploy/kubernetes")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
            .collect();
        assert_eq!(
            listed, on_disk,
            "kustomization.yaml lists every manifest of the folder and nothing else"
        );
        let objects: Vec<Value> = listed
            .iter()
            .flat_map(|file| yaml_documents(&dir.join(file)))
            .collect();
        for object in &objects {
            for field in ["apiVersion", "kind"] {
                string(&object[field], field);
            }
            string(&object["metadata"]["name"], "metadata.name");
        }
        Self { objects }
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    fn only<'a>(&'a self, kind: &'a str) -> &'a Value {
        let all: Vec<&Value> = self.of_kind(kind).collect();
        assert_eq!(all.len(), 1, "exactly one {kind}");
        all[0]
    }

    fn config_map(&self) -> BTreeMap<String, String> {
        string_map(&self.only("ConfigMap")["data"], "ConfigMap data")
    }

    fn secret(&self) -> BTreeMap<String, String> {
        let secret = self.only("Secret");
        assert!(
            secret.get("data").is_none(),
            "the example Secret uses readable stringData"
        );
        string_map(&secret["stringData"], "Secret stringData")
    }

    /// Deployments and the Job: (kind, name, pod template).
    fn workloads(&self) -> Vec<(&str, &str, &Value)> {
        self.objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "Job")
            .map(|o| {
                (
                    string(&o["kind"], "kind"),
                    string(&o["metadata"]["name"], "name"),
                    &o["spec"]["template"],
                )
            })
            .collect()
    }

    /// The configuration the pods get (SECRET_KEY made valid; the Secret's other values do not
    /// matter for ports and timing).
    fn pod_config(&self) -> docket::config::Config {
        let config = self.config_map();
        docket::config::Config::from_lookup(|name| match name {
            "SECRET_KEY" => Some(TEST_SECRET_KEY.to_owned()),
            _ => config.get(name).cloned(),
        })
        .expect("the ConfigMap is a valid configuration")
    }
}

/// The single container of a pod template.
fn pod_container(template: &Value) -> &Value {
    let containers = template["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// `command` followed by `args`.
fn command_line(container: &Value) -> Vec<String> {
    ["command", "args"]
        .iter()
        .filter_map(|field| container[*field].as_array())
        .flatten()
        .map(|part| string(part, "a command part").to_owned())
        .collect()
}

/// The subcommand a container runs; the image's binary is `docket` on PATH (see the Dockerfile).
fn subcommand(container: &Value) -> Vec<String> {
    let line = command_line(container);
    assert_eq!(
        line.first().map(String::as_str),
        Some("docket"),
        "containers run the docket binary: {line:?}"
    );
    line[1..].to_vec()
}

/// Every variable `src/config.rs` reads, recorded by running it over an empty environment (the
/// defaults are valid, so it reads every variable before returning).
fn configuration_variables() -> BTreeSet<String> {
    let read = Mutex::new(BTreeSet::new());
    docket::config::Config::from_lookup(|name| {
        read.lock().unwrap().insert(name.to_owned());
        None
    })
    .expect("the defaults are a valid configuration");
    read.into_inner().unwrap()
}

fn is_known_variable(name: &str, configuration: &BTreeSet<String>) -> bool {
    configuration.contains(name)
        // With OBJECT_STORE_URL=s3://… src/objects.rs passes on the AWS_* variables object_store
        // recognises, as the AWS SDKs read them.
        || (name.starts_with("AWS_")
            && name
                .to_ascii_lowercase()
                .parse::<object_store::aws::AmazonS3ConfigKey>()
                .is_ok())
}

/// Resolves a probe's or Service's port (a number, or the name of a container port) to a number.
fn resolve_port(port: &Value, container: &Value) -> Option<u64> {
    if let Some(number) = port.as_u64() {
        return Some(number);
    }
    let name = port.as_str()?;
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
}

#[test]
fn kubernetes_manifests_fit_the_binary() {
    let manifests = Manifests::load();
    let configuration = configuration_variables();
    assert!(
        configuration.contains("DATABASE_URL") && configuration.contains("SHUTDOWN_GRACE_SECONDS"),
        "the recorded variable list is real: {configuration:?}"
    );
    let config_map = manifests.config_map();
    let secret = manifests.secret();
    for name in config_map.keys().chain(secret.keys()) {
        assert!(
            is_known_variable(name, &configuration),
            "{name} (ConfigMap/Secret, passed as an environment variable) is not read by docket"
        );
    }
    let database_url = url::Url::parse(&secret["DATABASE_URL"]).expect("DATABASE_URL is a URL");
    assert_eq!(database_url.scheme(), "postgres");
    assert!(
        database_url
            .query_pairs()
            .any(|(k, v)| k == "sslmode" && v == "require"),
        "the example DATABASE_URL insists on TLS"
    );

    let pods = manifests.pod_config();
    let port = u64::from(pods.port);
    let grace = pods.shutdown_grace.as_secs();
    let host: std::net::IpAddr = pods.host.parse().expect("HOST is an address");
    assert!(
        host.is_unspecified(),
        "HOST must listen on every interface: probes and the Service reach the pod over its IP"
    );
    assert!(!pods.auto_migrate, "pods leave migrations to the Job");

    let config_map_name = manifests.only("ConfigMap")["metadata"]["name"].clone();
    let secret_name = manifests.only("Secret")["metadata"]["name"].clone();
    let dir = tempfile::tempdir().unwrap();
    let mut roles = BTreeMap::new();
    for (kind, name, template) in manifests.workloads() {
        let spec = &template["spec"];
        assert_eq!(spec["automountServiceAccountToken"], false, "{name}");
        let pod_security = &spec["securityContext"];
        assert_eq!(pod_security["runAsNonRoot"], true, "{name}");
        assert!(
            pod_security["runAsUser"]
                .as_u64()
                .is_some_and(|uid| uid > 0),
            "{name}: a numeric non-root UID"
        );
        assert_eq!(
            pod_security["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );

        let container = pod_container(template);
        let args = subcommand(container);
        let mut help: Vec<&str> = args.iter().map(String::as_str).collect();
        help.push("--help");
        let out = run(dir.path(), &[], &help);
        assert!(
            out.status.success(),
            "{name}: `docket {}` is not a subcommand: {}",
            args.join(" "),
            text(&out.stderr)
        );
        roles.insert(name, (kind, args.join(" ")));

        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_ne!(security["privileged"], true, "{name}");
        assert!(
            security["capabilities"]["drop"]
                .as_array()
                .is_some_and(|drop| drop.contains(&json!("ALL"))),
            "{name}: drops all capabilities"
        );
        for (section, field) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ] {
            assert!(
                container["resources"][section][field].is_string(),
                "{name}: resources.{section}.{field}"
            );
        }
        for variable in container["env"].as_array().into_iter().flatten() {
            let variable = string(&variable["name"], "env name");
            assert!(
                is_known_variable(variable, &configuration),
                "{name}: env {variable} is not read by docket"
            );
        }
        let sources = container["envFrom"].as_array().expect("envFrom");
        let from_config_map = sources
            .iter()
            .any(|s| s["configMapRef"]["name"] == config_map_name);
        let from_secret = sources
            .iter()
            .any(|s| s["secretRef"]["name"] == secret_name);
        assert!(
            from_config_map && from_secret,
            "{name}: gets the ConfigMap and the Secret"
        );
        assert_eq!(
            sources.len(),
            2,
            "{name}: envFrom names only existing sources"
        );

        if kind != "Deployment" {
            continue;
        }
        let http = container["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["name"] == "http"))
            .unwrap_or_else(|| panic!("{name}: a container port named http"));
        assert_eq!(
            http["containerPort"].as_u64(),
            Some(port),
            "{name}: PORT is {port}"
        );
        for (probe, path) in [
            ("livenessProbe", Some("/health/live")),
            ("readinessProbe", Some("/health/ready")),
            ("startupProbe", None),
        ] {
            let probe_spec = &container[probe]["httpGet"];
            if probe_spec.is_null() && path.is_none() {
                continue;
            }
            if let Some(path) = path {
                assert_eq!(probe_spec["path"], path, "{name}: {probe}");
            }
            assert_eq!(
                resolve_port(&probe_spec["port"], container),
                Some(port),
                "{name}: {probe} probes PORT"
            );
        }
        let annotations = string_map(&template["metadata"]["annotations"], "annotations");
        assert_eq!(
            annotations.get("prometheus.io/port"),
            Some(&port.to_string()),
            "{name}"
        );
        let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        let termination = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        assert!(
            termination > pre_stop + grace,
            "{name}: terminationGracePeriodSeconds {termination} must exceed the preStop pause \
             ({pre_stop} s) plus SHUTDOWN_GRACE_SECONDS ({grace} s), or Kubernetes kills the drain"
        );
    }
    let deployments: BTreeSet<String> = roles
        .values()
        .filter(|(kind, _)| *kind == "Deployment")
        .map(|(_, args)| args.clone())
        .collect();
    assert_eq!(
        deployments,
        BTreeSet::from(["api", "scheduler", "worker"].map(String::from))
    );
    assert!(
        roles
            .values()
            .any(|(kind, args)| *kind == "Job" && args == "migrate")
    );

    let deployment = |name: &str| {
        manifests
            .of_kind("Deployment")
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Deployment {name}"))
    };
    let pod_labels =
        |d: &Value| string_map(&d["spec"]["template"]["metadata"]["labels"], "pod labels");
    for d in manifests.of_kind("Deployment") {
        let selector = string_map(&d["spec"]["selector"]["matchLabels"], "selector");
        assert!(
            is_subset(&selector, &pod_labels(d)),
            "{}: selects its own pods",
            d["metadata"]["name"]
        );
    }
    let role_of = |d: &Value| subcommand(pod_container(&d["spec"]["template"])).join(" ");

    let service = manifests.only("Service");
    let selector = string_map(&service["spec"]["selector"], "Service selector");
    let selected: Vec<&Value> = manifests
        .of_kind("Deployment")
        .filter(|d| is_subset(&selector, &pod_labels(d)))
        .collect();
    assert_eq!(selected.len(), 1, "the Service selects one Deployment");
    assert_eq!(role_of(selected[0]), "api");
    let api_container = pod_container(&selected[0]["spec"]["template"]);
    for service_port in service["spec"]["ports"].as_array().expect("ports") {
        assert_eq!(
            resolve_port(&service_port["targetPort"], api_container),
            Some(port)
        );
    }

    let mut scaled = BTreeMap::new();
    for hpa in manifests.of_kind("HorizontalPodAutoscaler") {
        let target = string(&hpa["spec"]["scaleTargetRef"]["name"], "scaleTargetRef");
        let d = deployment(target);
        let metrics = hpa["spec"]["metrics"].as_array().expect("metrics");
        for metric in metrics {
            if metric["type"] == "Resource" {
                let resource = string(&metric["resource"]["name"], "resource");
                assert!(
                    pod_container(&d["spec"]["template"])["resources"]["requests"][resource]
                        .is_string(),
                    "{target}: utilisation needs a {resource} request"
                );
            }
        }
        scaled.insert(role_of(d), (hpa, metrics.clone()));
    }
    assert_eq!(scaled["api"].1[0]["resource"]["name"], "cpu");
    assert_eq!(
        scaled["worker"].1[0]["external"]["metric"]["name"],
        "docket_queue_depth"
    );

    for pdb in manifests.of_kind("PodDisruptionBudget") {
        let selector = string_map(&pdb["spec"]["selector"]["matchLabels"], "PDB selector");
        let covered: Vec<&Value> = manifests
            .of_kind("Deployment")
            .filter(|d| is_subset(&selector, &pod_labels(d)))
            .collect();
        assert_eq!(
            covered.len(),
            1,
            "{}: covers one Deployment",
            pdb["metadata"]["name"]
        );
        let d = covered[0];
        let fewest = scaled
            .get(&role_of(d))
            .and_then(|(hpa, _)| hpa["spec"]["minReplicas"].as_u64())
            .or_else(|| d["spec"]["replicas"].as_u64())
            .unwrap_or(1);
        let min_available = pdb["spec"]["minAvailable"].as_u64().expect("minAvailable");
        assert!(
            min_available < fewest,
            "{}: minAvailable {min_available} with {fewest} replicas would block every node drain",
            pdb["metadata"]["name"]
        );
    }
}

#[test]
fn the_binary_reads_the_example_configuration_as_written() {
    let manifests = Manifests::load();
    let config_map = manifests.config_map();
    let secret = manifests.secret();
    let dir = tempfile::tempdir().unwrap();
    let mut env: BTreeMap<&str, &str> = config_map
        .iter()
        .chain(secret.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    let list: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, *v)).collect();
    let out = run(dir.path(), &list, &["config"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the placeholder SECRET_KEY must keep the example from starting"
    );
    assert!(
        text(&out.stderr).contains("SECRET_KEY"),
        "{}",
        text(&out.stderr)
    );

    env.insert("SECRET_KEY", TEST_SECRET_KEY);
    let list: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, *v)).collect();
    let out = run(dir.path(), &list, &["config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    for (name, value) in &config_map {
        if name.starts_with("AWS_") {
            continue;
        }
        let line = format!("{name}={value}");
        assert!(
            printed.lines().any(|l| l == line),
            "docket reads {line} differently:\n{printed}"
        );
    }
}

/// A metric name with the label matchers it is used with.
#[derive(Debug, PartialEq)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// Skips a quoted string starting at `chars[i]`; returns its unescaped content and the next index.
fn quoted(chars: &[char], mut i: usize) -> (String, usize) {
    let quote = chars[i];
    let mut value = String::new();
    i += 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        if let Some(&c) = chars.get(i) {
            value.push(c);
        }
        i += 1;
    }
    (value, i + 1)
}

fn skip_spaces(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses `{a="x", b=~"y"}` (PromQL matchers or exposition labels) starting at `chars[i] == '{'`.
fn label_block(chars: &[char], mut i: usize) -> (Vec<(String, String, String)>, usize) {
    let mut matchers = Vec::new();
    i += 1;
    loop {
        while chars.get(i).is_some_and(|c| c.is_whitespace() || *c == ',') {
            i += 1;
        }
        match chars.get(i) {
            Some('}') => return (matchers, i + 1),
            None => panic!("unterminated label block"),
            _ => {}
        }
        let start = i;
        while chars.get(i).copied().is_some_and(is_name_char) {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        i = skip_spaces(chars, i);
        let op: String = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| chars[i..].starts_with(&op.chars().collect::<Vec<_>>()))
            .unwrap_or_else(|| panic!("no operator after label {label}"))
            .to_owned();
        i = skip_spaces(chars, i + op.len());
        let (value, next) = quoted(chars, i);
        matchers.push((label, op, value));
        i = next;
    }
}

/// The metric selectors of a PromQL expression: names that are neither functions, aggregations,
/// operators nor labels of `by (…)`-style lists, with their matchers.
fn selectors(expr: &str) -> Vec<Selector> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i = quoted(&chars, i).1;
        } else if c == '[' {
            // A range or subquery duration, possibly a Grafana variable such as $__rate_interval.
            i += chars[i..]
                .iter()
                .position(|&c| c == ']')
                .expect("closing ]")
                + 1;
        } else if c == '{' {
            panic!("a selector without a metric name in {expr}");
        } else if c.is_ascii_digit() {
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while chars.get(i).copied().is_some_and(is_name_char) {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            let next = skip_spaces(&chars, i);
            if LABEL_LISTS.contains(&name.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = next + chars[next..].iter().position(|&c| c == ')').expect(")") + 1;
                }
            } else if KEYWORDS.contains(&name.as_str()) || chars.get(next) == Some(&'(') {
                // An operator, an aggregation or a function call.
            } else if chars.get(next) == Some(&'{') {
                let (matchers, after) = label_block(&chars, next);
                found.push(Selector { name, matchers });
                i = after;
            } else {
                found.push(Selector {
                    name,
                    matchers: Vec::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn promql_selectors_are_found() {
    let found = selectors(
        r#"sum by (le) (rate(a_bucket{x="1", y=~"a|b\"c"}[$__rate_interval])) / on(instance) group_left max(b) > 0.5 or absent(c{role="w"})"#,
    );
    let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b", "c"]);
    assert_eq!(
        found[0].matchers,
        [
            ("x".to_owned(), "=".to_owned(), "1".to_owned()),
            ("y".to_owned(), "=~".to_owned(), "a|b\"c".to_owned())
        ]
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

/// A metric family seen at `/metrics`: its type and every label value its samples had.
#[derive(Debug)]
struct Family {
    kind: MetricType,
    labels: BTreeMap<String, BTreeSet<String>>,
}

/// Adds the families of a Prometheus text exposition to `families`.
fn read_exposition(body: &str, families: &mut BTreeMap<String, Family>) {
    let mut current: Option<String> = None;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            let kind = match kind.trim() {
                "counter" => MetricType::Counter,
                "gauge" => MetricType::Gauge,
                "histogram" => MetricType::Histogram,
                "summary" => MetricType::Summary,
                other => panic!("{name}: unexpected type {other}"),
            };
            let family = families.entry(name.to_owned()).or_insert(Family {
                kind,
                labels: BTreeMap::new(),
            });
            assert_eq!(family.kind, kind, "{name} has one type in every process");
            current = Some(name.to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name = current.as_ref().expect("samples follow their # TYPE line");
        let chars: Vec<char> = line.chars().collect();
        let name_end = chars
            .iter()
            .position(|&c| c == '{' || c == ' ')
            .expect("a sample");
        let sample: String = chars[..name_end].iter().collect();
        assert!(sample.starts_with(name.as_str()), "{sample} under {name}");
        let family = families.get_mut(name).expect("family");
        if chars[name_end] == '{' {
            for (label, _, value) in label_block(&chars, name_end).0 {
                family.labels.entry(label).or_default().insert(value);
            }
        }
    }
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// Every metric `src/` records through the `metrics` macros, with the type it is exported as.
fn registered_in_source() -> BTreeMap<String, MetricType> {
    let constants = BTreeMap::from([
        (
            "HTTP_REQUESTS_TOTAL",
            docket::telemetry::HTTP_REQUESTS_TOTAL,
        ),
        (
            "HTTP_REQUEST_DURATION_SECONDS",
            docket::telemetry::HTTP_REQUEST_DURATION_SECONDS,
        ),
    ]);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // The exporter renders a histogram as a summary unless buckets are set for it; telemetry.rs
    // sets them for one metric, http_request_duration_seconds, which /metrics shows as a histogram.
    let telemetry = read(&src.join("telemetry.rs"));
    assert_eq!(
        telemetry.matches("set_buckets_for_metric").count(),
        1,
        "a metric got buckets: update the histogram/summary rule here"
    );
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = BTreeMap::new();
    for file in files {
        let source = read(&file);
        for (call, kind) in [
            ("counter!(", MetricType::Counter),
            ("gauge!(", MetricType::Gauge),
            ("histogram!(", MetricType::Summary),
        ] {
            for (at, _) in source.match_indices(call) {
                let rest = source[at + call.len()..].trim_start();
                let name = if let Some(literal) = rest.strip_prefix('"') {
                    literal.split('"').next().expect("a name").to_owned()
                } else {
                    let ident: String = rest.chars().take_while(|&c| is_name_char(c)).collect();
                    constants
                        .get(ident.as_str())
                        .unwrap_or_else(|| {
                            panic!(
                                "{}: metric named by {ident}: add the constant here",
                                file.display()
                            )
                        })
                        .to_string()
                };
                found.insert(name, kind);
            }
        }
    }
    found
}

/// Where a metric reference comes from, and what it selects.
struct Reference {
    origin: String,
    selector: Selector,
}

/// Every metric the alerts, the dashboard and the worker autoscaler use.
fn metric_references(manifests: &Manifests) -> Vec<Reference> {
    let mut references = Vec::new();
    let mut add = |origin: String, expr: &str| {
        let found = selectors(expr);
        assert!(!found.is_empty(), "{origin}: no metric in {expr}");
        references.extend(found.into_iter().map(|selector| Reference {
            origin: origin.clone(),
            selector,
        }));
    };

    let alerts = yaml_documents(&deploy_path("prometheus/alerts.yaml"));
    for group in alerts[0]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            add(
                format!("alerts.yaml {}", rule["alert"]),
                string(&rule["expr"], "expr"),
            );
        }
    }

    let dashboard: Value =
        serde_json::from_str(&read(&deploy_path("grafana/docket.json"))).expect("dashboard JSON");
    for panel in dashboard_panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            add(
                format!("docket.json panel {}", panel["title"]),
                string(&target["expr"], "expr"),
            );
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("list") {
        if variable["type"] == "query" {
            let query = string(&variable["definition"], "definition");
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(metric, _)| metric)
                .unwrap_or_else(|| panic!("variable queries use label_values: {query}"));
            add(format!("docket.json variable {}", variable["name"]), inner);
        }
    }

    for hpa in manifests.of_kind("HorizontalPodAutoscaler") {
        for metric in hpa["spec"]["metrics"].as_array().expect("metrics") {
            if metric["type"] != "External" {
                continue;
            }
            let metric = &metric["external"]["metric"];
            let labels = string_map(&metric["selector"]["matchLabels"], "matchLabels");
            references.push(Reference {
                origin: format!("hpa.yaml {}", hpa["metadata"]["name"]),
                selector: Selector {
                    name: string(&metric["name"], "metric name").to_owned(),
                    matchers: labels
                        .into_iter()
                        .map(|(k, v)| (k, "=".to_owned(), v))
                        .collect(),
                },
            });
        }
    }
    references
}

/// Every panel of the dashboard, including those nested in collapsed rows.
fn dashboard_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    panels
}

/// What is wrong with a reference, if anything.
fn check_reference(
    reference: &Reference,
    seen: &BTreeMap<String, Family>,
    source: &BTreeMap<String, MetricType>,
) -> Option<String> {
    let name = &reference.selector.name;
    let origin = &reference.origin;
    let Some((family, suffix)) = ["", "_bucket", "_sum", "_count"]
        .into_iter()
        .filter_map(|suffix| Some((name.strip_suffix(suffix)?, suffix)))
        .find(|(family, _)| seen.contains_key(*family) || source.contains_key(*family))
    else {
        return Some(format!("{origin}: {name} is not a metric docket records"));
    };
    let kind = seen.get(family).map_or(source[family], |f| f.kind);
    let suffix_fits = match kind {
        MetricType::Counter | MetricType::Gauge => suffix.is_empty(),
        MetricType::Histogram => !suffix.is_empty(),
        MetricType::Summary => suffix != "_bucket",
    };
    if !suffix_fits {
        return Some(format!(
            "{origin}: {name} does not exist ({family} is a {kind:?})"
        ));
    }
    let Some(observed) = seen.get(family) else {
        if ONLY_IN_SOURCE.iter().any(|(n, _)| *n == family) {
            return None;
        }
        return Some(format!("{origin}: {family} is not exposed at /metrics"));
    };
    for (label, op, value) in &reference.selector.matchers {
        if TARGET_LABELS.contains(&label.as_str()) {
            continue;
        }
        let Some(values) = observed.labels.get(label) else {
            return Some(format!("{origin}: {family} has no label {label}"));
        };
        if op == "=" && !values.contains(value) {
            return Some(format!(
                "{origin}: {family}{{{label}=\"{value}\"}} never appears (values: {values:?})"
            ));
        }
    }
    None
}

/// Polls `path` until it answers 200.
async fn wait_for_ok(process: &Process, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = support::get(process.url(path)).await.map(|r| r.status());
        if status.as_ref().is_ok_and(|s| s.is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "{path} answers {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_serves_its_probes_and_the_metrics_dashboards_and_alerts_use() {
    let manifests = Manifests::load();
    let references = metric_references(&manifests);
    let source = registered_in_source();
    for reference in &references {
        assert!(
            ["", "_bucket", "_sum", "_count"].iter().any(|suffix| {
                reference
                    .selector
                    .name
                    .strip_suffix(suffix)
                    .is_some_and(|family| source.contains_key(family))
            }),
            "{}: {} is not recorded anywhere in src/",
            reference.origin,
            reference.selector.name
        );
    }
    for (name, why) in ONLY_IN_SOURCE {
        assert!(source.contains_key(*name), "{name} ({why}) is in src/");
    }

    let db = TestDatabase::new(Backend::Sqlite).await.expect("SQLite");
    let dir = db.dir.path();
    let objects = format!("file://{}", dir.join("objects").display());
    // The pods' environment, except: HOST stays loopback on a shared machine, PORT is a free one,
    // and attachments go to a directory instead of S3 (no credentials or network here).
    let mut env: Vec<(String, String)> = manifests
        .config_map()
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "HOST" | "PORT" | "OBJECT_STORE_URL"))
        .filter(|(k, _)| !k.starts_with("AWS_"))
        .collect();
    env.extend([
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("SECRET_KEY".to_owned(), TEST_SECRET_KEY.to_owned()),
        ("OBJECT_STORE_URL".to_owned(), objects),
    ]);

    let job = manifests.only("Job");
    let migrate = subcommand(pod_container(&job["spec"]["template"]));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let migrate_refs: Vec<&str> = migrate.iter().map(String::as_str).collect();
    let out = run(dir, &env_refs, &migrate_refs);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Work for every role, stored before they start (on SQLite nothing wakes a sleeping
    // scheduler): a job to run now, one due in an hour (so the queue gauges have a queued group)
    // and a task due a second ago.
    let state = docket::app::AppState::initialise(support::test_config(&db, &[]))
        .await
        .expect("seeding connects");
    let now = chrono::Utc::now();
    for run_at in [None, Some(now + chrono::Duration::hours(1))] {
        state
            .queue
            .enqueue(docket::queue::NewJob {
                tenant_id: "t1".to_owned(),
                kind: "sleep".to_owned(),
                payload: json!({ "seconds": 0.05 }),
                run_at,
                ..docket::queue::NewJob::default()
            })
            .await
            .expect("enqueue");
    }
    let task = docket::scheduler::tasks::TaskRow {
        id: "deploy-manifests".to_owned(),
        tenant_id: "t1".to_owned(),
        title: "deploy manifests".to_owned(),
        description: String::new(),
        schedule_kind: "cron".to_owned(),
        schedule_expr: "* * * * *".to_owned(),
        timezone: "UTC".to_owned(),
        payload: "{}".to_owned(),
        priority: 0,
        max_retries: 0,
        timeout_seconds: 60,
        misfire_grace_seconds: 60,
        concurrency: 1,
        concurrency_key: None,
        concurrency_limit: None,
        rate_count: None,
        rate_per_seconds: None,
        dedupe_key: None,
        dedupe_window_seconds: None,
        status: "active".to_owned(),
        next_run_at: Some(now - chrono::Duration::seconds(1)),
        created_by: "test".to_owned(),
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.store.begin().await.expect("begin");
    docket::scheduler::tasks::insert(&mut tx, &task)
        .await
        .expect("task");
    tx.commit().await.expect("commit");
    state.store.close().await;

    let mut processes = Vec::new();
    for deployment in manifests.of_kind("Deployment") {
        let name = string(&deployment["metadata"]["name"], "name");
        let template = &deployment["spec"]["template"];
        let container = pod_container(template);
        let args = subcommand(container);
        let port = free_port().to_string();
        let mut env_refs = env_refs.clone();
        env_refs.push(("PORT", port.as_str()));
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Process::start(dir, &env_refs, &arg_refs);
        process.wait_live().await;
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            if let Some(path) = container[probe]["httpGet"]["path"].as_str() {
                wait_for_ok(&process, path).await;
            }
        }
        let metrics_path = string(
            &template["metadata"]["annotations"]["prometheus.io/path"],
            "prometheus.io/path",
        )
        .to_owned();
        wait_for_ok(&process, &metrics_path).await;
        for path in ["/api/v1/health", "/no-such-page"] {
            support::get(process.url(path)).await.expect("answers");
        }
        processes.push((name.to_owned(), process, metrics_path));
    }

    // Jobs and the task run in the background: scrape until everything referenced has shown up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let problems = loop {
        let mut seen = BTreeMap::new();
        for (_, process, path) in &processes {
            let body = support::get(process.url(path))
                .await
                .expect("scrape")
                .text()
                .await
                .expect("body");
            read_exposition(&body, &mut seen);
        }
        let problems: Vec<String> = references
            .iter()
            .filter_map(|r| check_reference(r, &seen, &source))
            .collect();
        if problems.is_empty() || Instant::now() > deadline {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(problems.is_empty(), "{problems:#?}");

    for (name, process, _) in processes {
        let (exit, _) = process.terminate();
        assert!(exit.success(), "{name}: {exit}");
    }
}

#[test]
fn the_dashboard_reads_from_the_chosen_prometheus() {
    let dashboard: Value =
        serde_json::from_str(&read(&deploy_path("grafana/docket.json"))).expect("dashboard JSON");
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let variables = dashboard["templating"]["list"].as_array().expect("list");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(datasource["query"], "prometheus");
    let uid = format!("${{{}}}", string(&datasource["name"], "name"));
    let uses_variable = |value: &Value| value["type"] == "prometheus" && value["uid"] == *uid;
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        assert!(
            uses_variable(&variable["datasource"]),
            "{}",
            variable["name"]
        );
    }
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for panel in dashboard_panels(&dashboard) {
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "duplicate id"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert!(uses_variable(&panel["datasource"]), "{}", panel["title"]);
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            assert!(uses_variable(&target["datasource"]), "{}", panel["title"]);
            string(&target["expr"], "expr");
            queries += 1;
        }
    }
    assert!(queries >= 10, "the dashboard shows the essentials");
}

#[test]
fn alert_rules_cover_the_failure_modes_and_pass_promtool() {
    let alerts = yaml_documents(&deploy_path("prometheus/alerts.yaml"));
    let mut names = BTreeSet::new();
    for group in alerts[0]["groups"].as_array().expect("groups") {
        string(&group["name"], "group name");
        for rule in group["rules"].as_array().expect("rules") {
            let name = string(&rule["alert"], "alert").to_owned();
            string(&rule["expr"], "expr");
            assert!(
                matches!(
                    rule["labels"]["severity"].as_str(),
                    Some("warning" | "critical")
                ),
                "{name}: severity"
            );
            for field in ["summary", "description"] {
                string(&rule["annotations"][field], field);
            }
            assert!(names.insert(name), "alert names are unique");
        }
    }
    let expected = [
        "DocketHighErrorRate",
        "DocketHighLatency",
        "DocketQueueStalled",
        "DocketSlaBreaches",
        "DocketDatabasePoolNearlyExhausted",
        "DocketWorkersDown",
    ];
    assert_eq!(names, BTreeSet::from(expected.map(String::from)));

    // promtool (Debian package `prometheus`) checks the syntax and runs alerts.test.yaml, which
    // shows each alert firing on a breach and staying quiet otherwise.
    let dir = deploy_path("prometheus");
    if let Err(e) = Command::new("promtool").arg("--version").output() {
        crate::support::unavailable("promtool (apt-get install prometheus)", &e.to_string());
        return;
    }
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}
