//! The deployment files (`Dockerfile`, `compose*.yaml`, `.env.example`) checked against the binary
//! they ship, so that a renamed variable, a changed default or a removed subcommand fails here
//! rather than in a deployment. The binary is the reference: variables and defaults come from
//! `docket config` in an empty environment, subcommands from `docket <command> --help`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::{Process, run, text};
use crate::support::free_port;

/// What a required Compose variable (`${NAME:?message}`) stands for in these checks: long enough
/// for `SECRET_KEY` in production and harmless inside a URL.
const REQUIRED_VALUE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// Services of compose.yaml that run the Docket image; postgres and redis are the others.
const DOCKET_SERVICES: [&str; 4] = ["migrate", "api", "worker", "scheduler"];

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `docket config` lines for `env` in an empty directory (so no `.env` is read).
fn config_lines(env: &[(&str, &str)]) -> Result<Vec<String>, String> {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), env, &["config"]);
    if out.status.success() {
        Ok(text(&out.stdout).lines().map(str::to_owned).collect())
    } else {
        Err(text(&out.stderr))
    }
}

/// Every variable the configuration reads, with its default.
fn defaults() -> BTreeMap<String, String> {
    config_lines(&[])
        .expect("docket config runs without any configuration")
        .iter()
        .map(|line| {
            let (name, value) = line.split_once('=').expect("NAME=value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// Whether `args` is a command line the binary accepts (clap rejects unknown subcommands even
/// with `--help`, and prints the help of known ones without reading the configuration).
fn is_docket_command(args: &[&str]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let mut with_help = args.to_vec();
    with_help.push("--help");
    run(dir.path(), &[], &with_help).status.success()
}

fn assert_docket_command(args: &[&str], context: &str) {
    assert!(
        !args.is_empty() && is_docket_command(args),
        "{context}: `docket {}` is not a docket subcommand",
        args.join(" ")
    );
}

fn as_strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list, got {value}"))
        .iter()
        .map(|item| match item {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

// --- Dockerfile ----------------------------------------------------------------------------------

/// One instruction, continuation lines joined: (`KEYWORD`, arguments).
type Instruction = (String, String);

/// The global `ARG` defaults and the instructions of each stage.
fn dockerfile() -> (BTreeMap<String, String>, Vec<Vec<Instruction>>) {
    let source = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in source.lines() {
        let trimmed = line.trim();
        // Comment lines may sit between continuation lines; they are no part of the instruction.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    let mut args = BTreeMap::new();
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for (keyword, rest) in instructions {
        if keyword == "FROM" {
            stages.push(Vec::new());
        }
        match stages.last_mut() {
            Some(stage) => stage.push((keyword, rest)),
            None if keyword == "ARG" => {
                let (name, value) = rest.split_once('=').unwrap_or((&rest, ""));
                args.insert(name.to_owned(), value.to_owned());
            }
            None => panic!("Dockerfile: {keyword} before the first FROM"),
        }
    }
    (args, stages)
}

/// The arguments of the last `keyword` instruction of `stage`.
fn last<'a>(stage: &'a [Instruction], keyword: &str) -> Option<&'a str> {
    stage
        .iter()
        .rev()
        .find(|(k, _)| k == keyword)
        .map(|(_, args)| args.as_str())
}

/// The image a `FROM` names, with the global `ARG` defaults substituted.
fn base_image(stage: &[Instruction], args: &BTreeMap<String, String>) -> String {
    let from = last(stage, "FROM").expect("a stage starts with FROM");
    let mut image = from
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    for (name, value) in args {
        image = image.replace(&format!("${{{name}}}"), value);
    }
    assert!(!image.contains('$'), "FROM {from}: unknown ARG");
    image
}

fn exec_form(args: &str, context: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{context} must use the exec form [\"…\"], got {args:?}: {e}"))
}

#[test]
fn the_dockerfile_builds_the_binary_and_runs_it_unprivileged_with_its_real_settings() {
    let defaults = defaults();
    let (args, stages) = dockerfile();
    assert!(stages.len() >= 2, "a multi-stage build");
    let runtime = stages.last().unwrap();
    let build = &stages[stages.len() - 2];

    let builder = base_image(build, &args);
    let runner = base_image(runtime, &args);
    assert!(
        builder.starts_with("rust:"),
        "built with the Rust image, got {builder}"
    );
    match runner
        .strip_prefix("debian:")
        .and_then(|tag| tag.strip_suffix("-slim"))
    {
        // The binary links against the builder's glibc: same Debian release in both stages.
        Some(release) => assert!(
            builder.ends_with(&format!("-{release}")),
            "{builder} and {runner} must be the same Debian release"
        ),
        None => assert!(
            runner.starts_with("gcr.io/distroless/cc"),
            "runs on Debian slim or distroless/cc, got {runner}"
        ),
    }
    assert!(
        build
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains("cargo build --release --locked")),
        "the release build uses the committed Cargo.lock"
    );

    // Only the binary is copied into the final image.
    for (keyword, copy) in runtime.iter().filter(|(k, _)| k == "COPY" || k == "ADD") {
        assert!(
            keyword == "COPY"
                && copy.starts_with("--from=")
                && copy.ends_with(" /usr/local/bin/docket"),
            "the final image gets the binary only: {keyword} {copy}"
        );
    }

    let user = last(runtime, "USER").expect("the image sets USER");
    let user_name = user.split(':').next().unwrap_or_default();
    assert!(
        !["root", "0", ""].contains(&user_name),
        "runs unprivileged, got USER {user}"
    );

    let exposed: Vec<&str> = last(runtime, "EXPOSE")
        .expect("EXPOSE")
        .split_whitespace()
        .map(|p| p.trim_end_matches("/tcp"))
        .collect();
    assert_eq!(
        exposed,
        [defaults["PORT"].as_str()],
        "EXPOSE is the default PORT"
    );

    let healthcheck = last(runtime, "HEALTHCHECK").expect("HEALTHCHECK");
    let (_, probe) = healthcheck
        .split_once("CMD ")
        .expect("HEALTHCHECK … CMD [\"docket\", \"healthcheck\"]");
    assert_eq!(exec_form(probe, "HEALTHCHECK"), ["docket", "healthcheck"]);
    assert_eq!(last(runtime, "STOPSIGNAL"), Some("SIGTERM"));

    assert_eq!(
        exec_form(
            last(runtime, "ENTRYPOINT").expect("ENTRYPOINT"),
            "ENTRYPOINT"
        ),
        ["docket"]
    );
    let command = exec_form(last(runtime, "CMD").expect("CMD"), "CMD");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    assert_docket_command(&command, "Dockerfile CMD");

    // The working directory, where the relative defaults (DATA_DIR=data, the SQLite file) land,
    // is on a volume.
    let workdir = last(runtime, "WORKDIR").expect("WORKDIR");
    let volume = last(runtime, "VOLUME").expect("VOLUME");
    let volumes: Vec<String> = if volume.starts_with('[') {
        exec_form(volume, "VOLUME")
    } else {
        volume.split_whitespace().map(str::to_owned).collect()
    };
    assert!(
        volumes.iter().any(|v| Path::new(workdir).starts_with(v)),
        "WORKDIR {workdir} must be on a VOLUME ({volume})"
    );

    // ENV names real variables with values the binary accepts; HOST must let the published port in.
    let env: Vec<(String, String)> = runtime
        .iter()
        .filter(|(k, _)| k == "ENV")
        .flat_map(|(_, a)| a.split_whitespace())
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("ENV NAME=value");
            (name.to_owned(), value.to_owned())
        })
        .collect();
    for (name, _) in &env {
        assert!(
            defaults.contains_key(name),
            "Dockerfile ENV {name} is not a docket variable"
        );
    }
    assert!(
        env.iter()
            .any(|(n, v)| n == "HOST" && (v == "0.0.0.0" || v == "::")),
        "the image listens on all interfaces: {env:?}"
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let effective = config_lines(&env).expect("the image's ENV is a valid configuration");
    assert!(
        effective.contains(&format!("PORT={}", exposed[0])),
        "{effective:?}"
    );
}

/// The image's health check against a server configured as in the image (`HOST=0.0.0.0`): the
/// probe goes to 127.0.0.1 and passes, and SIGTERM (the STOPSIGNAL) ends the server cleanly.
#[tokio::test]
async fn the_image_healthcheck_passes_against_a_server_listening_on_all_interfaces() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let env = [("HOST", "0.0.0.0"), ("PORT", port.as_str())];
    let mut server = Process::start(dir.path(), &env, &["all"]);
    server.wait_live().await;
    let probe = run(dir.path(), &env, &["healthcheck"]);
    assert!(probe.status.success(), "{}", text(&probe.stderr));
    let (status, lines) = server.terminate();
    assert!(status.success(), "{status}: {lines:?}");
}

// --- Compose -------------------------------------------------------------------------------------

/// A Compose file with YAML merge keys (`<<: *anchor`) applied, as Compose reads it.
fn compose(name: &str) -> Value {
    let mut yaml: serde_norway::Value =
        serde_norway::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    yaml.apply_merge()
        .unwrap_or_else(|e| panic!("{name}: merge keys: {e}"));
    serde_json::to_value(yaml).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Substitutes Compose's `${NAME:-default}` / `${NAME-default}` (the default) and
/// `${NAME:?message}` / `${NAME?message}` ([`REQUIRED_VALUE`]), and `$$`. A bare `${NAME}` or
/// `$NAME` fails the test: unset, Compose would substitute an empty string with only a warning.
fn interpolate(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (expression, tail) = after
            .strip_prefix('{')
            .and_then(|s| s.split_once('}'))
            .unwrap_or_else(|| panic!("{raw:?}: write ${{NAME:-default}} or ${{NAME:?message}}"));
        let name_end = expression
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(expression.len());
        let operator = &expression[name_end..];
        let value = if let Some(default) = operator
            .strip_prefix(":-")
            .or_else(|| operator.strip_prefix('-'))
        {
            default.to_owned()
        } else if operator.starts_with(":?") || operator.starts_with('?') {
            REQUIRED_VALUE.to_owned()
        } else {
            panic!("{raw:?}: ${{{expression}}} has neither a default nor a required message");
        };
        out.push_str(&value);
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// A service's `environment`, in either the mapping or the list form, interpolated. A variable
/// without a value (passed through from the host) is left out, as Compose does when it is unset.
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Null => BTreeMap::new(),
        Value::Object(map) => map
            .iter()
            .filter_map(|(name, value)| {
                let value = match value {
                    Value::Null => return None,
                    Value::String(s) => interpolate(s),
                    other => other.to_string(),
                };
                Some((name.clone(), value))
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| {
                let (name, value) = item.as_str()?.split_once('=')?;
                Some((name.to_owned(), interpolate(value)))
            })
            .collect(),
        other => panic!("environment must be a mapping or a list, got {other}"),
    }
}

/// Each Docket service's environment in `layers` (compose.yaml first, then overrides) is made of
/// real variables and is a configuration the binary accepts.
fn assert_environments_are_docket_configurations(layers: &[&str]) {
    let known = defaults();
    let files: Vec<Value> = layers.iter().map(|name| compose(name)).collect();
    for service in DOCKET_SERVICES {
        let mut merged = BTreeMap::new();
        for (name, file) in layers.iter().zip(&files) {
            let env = environment(&file["services"][service]);
            for variable in env.keys() {
                assert!(
                    known.contains_key(variable),
                    "{name}: {service} sets {variable}, which docket does not read"
                );
            }
            merged.extend(env);
        }
        let env: Vec<(&str, &str)> = merged
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if let Err(e) = config_lines(&env) {
            panic!(
                "{}: {service}: docket rejects its environment: {e}",
                layers.join(" + ")
            );
        }
    }
}

fn services(file: &Value) -> &serde_json::Map<String, Value> {
    file["services"].as_object().expect("services")
}

#[test]
fn compose_runs_every_role_of_the_binary_on_postgres_and_redis() {
    let defaults = defaults();
    let file = compose("compose.yaml");
    let all = services(&file);
    let names: BTreeSet<&str> = all.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["postgres", "redis", "migrate", "api", "worker", "scheduler"])
    );

    let postgres = &all["postgres"];
    assert!(
        postgres["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("postgres:16"))
    );
    assert!(as_strings(&postgres["healthcheck"]["test"]).contains(&"pg_isready".to_owned()));
    let redis = &all["redis"];
    assert!(
        redis["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("redis:7"))
    );
    let redis_command = as_strings(&redis["command"]);
    assert!(
        redis_command
            .windows(2)
            .any(|w| w == ["--appendonly", "yes"]),
        "redis keeps an append-only file: {redis_command:?}"
    );
    assert_eq!(
        as_strings(&redis["healthcheck"]["test"])[1..],
        ["redis-cli", "ping"]
    );

    let declared_volumes = file["volumes"].as_object().expect("named volumes");
    for (name, service) in all {
        let logging = &service["logging"];
        assert_eq!(logging["driver"], "json-file", "{name} logs JSON to disk");
        assert!(
            logging["options"]["max-size"].is_string()
                && logging["options"]["max-file"].is_string(),
            "{name} rotates its logs: {logging}"
        );
        for mount in as_strings(&service["volumes"]) {
            let source = mount.split(':').next().unwrap_or_default();
            assert!(
                declared_volumes.contains_key(source),
                "{name} mounts {source}, which is not a named volume"
            );
        }
        if name != "migrate" {
            assert_eq!(service["restart"], "unless-stopped", "{name}");
        }
    }

    let version = env!("CARGO_PKG_VERSION");
    for name in DOCKET_SERVICES {
        let service = &all[name];
        let image = interpolate(service["image"].as_str().expect("image"));
        assert!(
            image.ends_with(&format!(":{version}")),
            "{name} defaults to this version's image, got {image}"
        );
        let command = as_strings(&service["command"]);
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        assert_docket_command(&command, &format!("compose.yaml {name}"));
        assert!(
            as_strings(&service["volumes"])
                .iter()
                .any(|m| m.ends_with(":/var/lib/docket")),
            "{name} mounts the data volume where the image keeps it"
        );
        assert!(
            environment(service)
                .get("DATA_DIR")
                .is_some_and(|dir| Path::new(dir).starts_with("/var/lib/docket")),
            "{name} keeps DATA_DIR on the volume"
        );
        if name == "migrate" {
            assert_eq!(command, ["migrate"]);
            assert_eq!(service["restart"], "no", "a one-shot job");
            continue;
        }
        assert_eq!(
            service["depends_on"]["migrate"]["condition"], "service_completed_successfully",
            "{name} starts after the migration"
        );
        assert_eq!(
            as_strings(&service["healthcheck"]["test"]),
            ["CMD", "docket", "healthcheck"],
            "{name}"
        );
    }
    assert_eq!(all["worker"]["deploy"]["replicas"], 2);
    for port in as_strings(&all["api"]["ports"]) {
        let container_port = port.rsplit(':').next().unwrap_or_default();
        assert_eq!(
            container_port, defaults["PORT"],
            "api publishes the default PORT"
        );
    }

    assert_environments_are_docket_configurations(&["compose.yaml"]);
}

#[test]
fn compose_dev_override_logs_debug_runs_one_worker_and_opens_the_databases_to_localhost() {
    let file = compose("compose.dev.yaml");
    let all = services(&file);
    for (name, service) in all {
        assert!(
            ["postgres", "redis"].contains(&name.as_str())
                || DOCKET_SERVICES.contains(&name.as_str()),
            "compose.dev.yaml: {name} is not a service of compose.yaml"
        );
        if let Some(command) = service.get("command") {
            let command = as_strings(command);
            let command: Vec<&str> = command.iter().map(String::as_str).collect();
            assert_docket_command(&command, &format!("compose.dev.yaml {name}"));
        }
    }
    assert_eq!(all["worker"]["deploy"]["replicas"], 1);
    for name in DOCKET_SERVICES {
        assert!(
            environment(&all[name])
                .get("LOG_LEVEL")
                .is_some_and(|level| level.contains("debug")),
            "{name} logs at debug level"
        );
    }
    for name in ["postgres", "redis"] {
        for port in as_strings(&all[name]["ports"]) {
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} is published on localhost only: {port}"
            );
        }
    }
    assert_environments_are_docket_configurations(&["compose.yaml", "compose.dev.yaml"]);
}

#[test]
fn compose_prod_override_limits_resources_and_publishes_no_database() {
    let base = compose("compose.yaml");
    let file = compose("compose.prod.yaml");
    let all = services(&file);
    for (name, service) in all {
        assert!(
            services(&base).contains_key(name),
            "compose.prod.yaml: {name} is not a service of compose.yaml"
        );
        let limits = &service["deploy"]["resources"]["limits"];
        assert!(
            !limits["cpus"].is_null() && !limits["memory"].is_null(),
            "{name} has CPU and memory limits"
        );
        if let Some(command) = service.get("command") {
            let command = as_strings(command);
            let command: Vec<&str> = command.iter().map(String::as_str).collect();
            assert_docket_command(&command, &format!("compose.prod.yaml {name}"));
        }
    }
    for name in ["postgres", "redis"] {
        assert!(
            base["services"][name]["ports"].is_null() && all[name]["ports"].is_null(),
            "{name} publishes no port in production"
        );
    }
    assert!(all["worker"]["deploy"]["replicas"].as_u64() >= Some(2));
    assert_environments_are_docket_configurations(&["compose.yaml", "compose.prod.yaml"]);
}

// --- .env.example --------------------------------------------------------------------------------

#[test]
fn env_example_lists_every_variable_with_its_real_default() {
    let defaults = defaults();
    let example = read(".env.example");
    // `NAME=value` sets a default; `# NAME=value` shows an example for a variable without one.
    let listed: BTreeSet<&str> = example
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    let known: BTreeSet<&str> = defaults.keys().map(String::as_str).collect();
    assert_eq!(
        listed, known,
        ".env.example must list exactly the variables docket reads"
    );

    // Used as `.env`, the example changes nothing: every value it sets is the default.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), &example).unwrap();
    let out = run(dir.path(), &[], &["config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let with_example: BTreeMap<String, String> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(n, v)| (n.to_owned(), v.to_owned())))
        .collect();
    assert_eq!(
        with_example, defaults,
        ".env.example sets a value that is not the default"
    );
}
