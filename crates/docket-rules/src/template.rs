//! `${…}` templates in step inputs: `${params.x}`, `${steps.id.path}`, `${run.job_id}`, `${now}`,
//! `${now+24h}` and `${env.NAME}` for allowed variables. A string that is exactly one template takes
//! the value's JSON type (so objects and numbers pass through); inside longer text values are
//! written as text. A path that does not exist is an error naming it, never an empty string.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

/// Why a template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
}

fn error(message: impl Into<String>) -> TemplateError {
    TemplateError {
        message: message.into(),
    }
}

/// One `${…}` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `params.…`, `steps.…` or `run.…`: a root and a path into it.
    Path { root: String, path: Vec<Segment> },
    /// `now`, `now+24h`, `now-15m`.
    Now(Duration),
    /// `env.NAME`.
    Env(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A piece of a templated string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Expr(String, Expr),
}

/// Splits `text` into literal text and expressions; `$${` is a literal `${`.
fn pieces(text: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            literal.push_str(&rest[..at - 1]);
            literal.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        literal.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| error(format!("unclosed template in {text:?}")))?;
        let source = after[..end].trim();
        if !literal.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut literal)));
        }
        out.push(Piece::Expr(source.to_owned(), parse(source)?));
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        out.push(Piece::Text(literal));
    }
    Ok(out)
}

/// Parses the inside of `${…}`.
pub fn parse(source: &str) -> Result<Expr, TemplateError> {
    if let Some(offset) = source.strip_prefix("now") {
        return parse_offset(offset.trim()).map(Expr::Now);
    }
    let (root, rest) = source.split_once('.').unwrap_or((source, ""));
    match root {
        "env" => {
            let valid =
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if valid {
                Ok(Expr::Env(rest.to_owned()))
            } else {
                Err(error(format!(
                    "${{{source}}}: env.NAME needs a variable name"
                )))
            }
        }
        "params" | "steps" | "run" => Ok(Expr::Path {
            root: root.to_owned(),
            path: parse_path(rest).map_err(|m| error(format!("${{{source}}}: {m}")))?,
        }),
        _ => Err(error(format!(
            "${{{source}}}: unknown name {root:?}; use params, steps, run, now or env"
        ))),
    }
}

/// `a.b[0].c` or `a.b.0.c`.
fn parse_path(text: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    if text.is_empty() {
        return Ok(segments);
    }
    for part in text.split('.') {
        let (key, mut indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if key.is_empty() && indexes.is_empty() {
            return Err("empty path segment".to_owned());
        }
        if !key.is_empty() {
            segments.push(match key.parse::<usize>() {
                Ok(i) => Segment::Index(i),
                Err(_) => Segment::Key(key.to_owned()),
            });
        }
        while let Some(inner) = indexes.strip_prefix('[') {
            let close = inner.find(']').ok_or("unclosed [")?;
            let index = inner[..close]
                .parse::<usize>()
                .map_err(|_| format!("[{}] is not an index", &inner[..close]))?;
            segments.push(Segment::Index(index));
            indexes = &inner[close + 1..];
        }
        if !indexes.is_empty() {
            return Err(format!("unexpected {indexes:?}"));
        }
    }
    Ok(segments)
}

/// `+24h`, `-15m`, `+30s`, `+7d` or nothing.
fn parse_offset(text: &str) -> Result<Duration, TemplateError> {
    if text.is_empty() {
        return Ok(Duration::zero());
    }
    let bad = || {
        error(format!(
            "${{now{text}}}: use now, now+24h, now-15m, now+30s or now+7d"
        ))
    };
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let rest = rest.trim();
    let unit = rest.chars().last().ok_or_else(bad)?;
    let amount: i64 = rest[..rest.len() - unit.len_utf8()]
        .trim()
        .parse()
        .map_err(|_| bad())?;
    let duration = match unit {
        's' => Duration::try_seconds(amount),
        'm' => Duration::try_minutes(amount),
        'h' => Duration::try_hours(amount),
        'd' => Duration::try_days(amount),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(duration * sign)
}

/// Every expression in the strings of `value`, for validation.
pub fn expressions(value: &Value) -> Result<Vec<(String, Expr)>, TemplateError> {
    let mut found = Vec::new();
    collect(value, &mut found)?;
    Ok(found)
}

fn collect(value: &Value, found: &mut Vec<(String, Expr)>) -> Result<(), TemplateError> {
    match value {
        Value::String(text) => {
            for piece in pieces(text)? {
                if let Piece::Expr(source, expr) = piece {
                    found.push((source, expr));
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect(item, found)?;
            }
        }
        Value::Object(map) => {
            for item in map.values() {
                collect(item, found)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// What templates can see.
pub struct Scope<'a> {
    pub params: &'a Value,
    pub steps: &'a Map<String, Value>,
    pub run: &'a Value,
    pub now: DateTime<Utc>,
    /// Allowed environment variables.
    pub env: &'a (dyn Fn(&str) -> Option<String> + Sync),
}

/// Renders every string in `value`. Returns the rendered value and the environment values that
/// went into it (so stored copies can redact them).
pub fn render(value: &Value, scope: &Scope) -> Result<(Value, Vec<String>), TemplateError> {
    let mut secrets = Vec::new();
    let rendered = render_value(value, scope, &mut secrets)?;
    Ok((rendered, secrets))
}

fn render_value(
    value: &Value,
    scope: &Scope,
    secrets: &mut Vec<String>,
) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(text) => render_string(text, scope, secrets)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, scope, secrets))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, scope, secrets)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

fn render_string(
    text: &str,
    scope: &Scope,
    secrets: &mut Vec<String>,
) -> Result<Value, TemplateError> {
    let parts = pieces(text)?;
    if let [Piece::Expr(source, expr)] = parts.as_slice() {
        return evaluate(source, expr, scope, secrets);
    }
    let mut out = String::new();
    for part in parts {
        match part {
            Piece::Text(t) => out.push_str(&t),
            Piece::Expr(source, expr) => match evaluate(&source, &expr, scope, secrets)? {
                Value::String(s) => out.push_str(&s),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Ok(Value::String(out))
}

fn evaluate(
    source: &str,
    expr: &Expr,
    scope: &Scope,
    secrets: &mut Vec<String>,
) -> Result<Value, TemplateError> {
    match expr {
        Expr::Now(offset) => Ok(Value::String(
            (scope.now + *offset).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )),
        Expr::Env(name) => {
            let value = (scope.env)(name).ok_or_else(|| {
                error(format!(
                    "${{{source}}}: {name} is not set or not in PIPELINE_ENV_ALLOWLIST"
                ))
            })?;
            secrets.push(value.clone());
            Ok(Value::String(value))
        }
        Expr::Path { root, path } => {
            let base = match root.as_str() {
                "params" => scope.params,
                "run" => scope.run,
                _ => {
                    let Some(Segment::Key(step)) = path.first() else {
                        return Err(error(format!(
                            "${{{source}}}: name a step, as in steps.<id>"
                        )));
                    };
                    let found = scope.steps.get(step).ok_or_else(|| {
                        error(format!(
                            "${{{source}}}: no step result {step:?} (yet); earlier results: {}",
                            keys(scope.steps)
                        ))
                    })?;
                    return walk(source, found, &path[1..], &format!("steps.{step}"));
                }
            };
            walk(source, base, path, root)
        }
    }
}

fn keys(map: &Map<String, Value>) -> String {
    if map.is_empty() {
        "none".to_owned()
    } else {
        map.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn walk(source: &str, start: &Value, path: &[Segment], base: &str) -> Result<Value, TemplateError> {
    let mut current = start;
    let mut at = base.to_owned();
    for segment in path {
        let next = match (segment, current) {
            (Segment::Key(k), Value::Object(map)) => map.get(k),
            (Segment::Index(i), Value::Array(items)) => items.get(*i),
            (Segment::Index(i), Value::Object(map)) => map.get(&i.to_string()),
            _ => None,
        };
        let shown = match segment {
            Segment::Key(k) => format!("{at}.{k}"),
            Segment::Index(i) => format!("{at}[{i}]"),
        };
        current = next.ok_or_else(|| {
            let hint = match current {
                Value::Object(map) if !map.is_empty() => {
                    format!(
                        "; {at} has {}",
                        map.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                }
                Value::Array(items) => format!("; {at} has {} items", items.len()),
                other => format!("; {at} is {}", type_name(other)),
            };
            error(format!("${{{source}}}: {shown} does not exist{hint}"))
        })?;
        at = shown;
    }
    Ok(current.clone())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn scope_with<'a>(
        params: &'a Value,
        steps: &'a Map<String, Value>,
        run: &'a Value,
        env: &'a (dyn Fn(&str) -> Option<String> + Sync),
    ) -> Scope<'a> {
        Scope {
            params,
            steps,
            run,
            now: Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap(),
            env,
        }
    }

    #[test]
    fn whole_templates_keep_their_type_and_embedded_ones_become_text() {
        let params = json!({ "city": "Chisinau", "limits": { "max": 3 }, "tags": ["a", "b"] });
        let mut steps = Map::new();
        steps.insert(
            "weather".into(),
            json!({ "status": 200, "body": { "temp": 4.5 } }),
        );
        let run = json!({ "job_id": "j1" });
        let env = |name: &str| (name == "REGION").then(|| "eu".to_owned());
        let scope = scope_with(&params, &steps, &run, &env);
        let input = json!({
            "url": "https://x.test/?q=${params.city}&n=${params.limits.max}",
            "limits": "${params.limits}",
            "first_tag": "${params.tags[1]}",
            "temp": "${steps.weather.body.temp}",
            "when": "${now+24h}",
            "region": "${ env.REGION }",
            "literal": "costs $${price}",
            "job": "${run.job_id}",
            "untouched": [1, true, null],
        });
        let (out, secrets) = render(&input, &scope).unwrap();
        assert_eq!(out["url"], "https://x.test/?q=Chisinau&n=3");
        assert_eq!(out["limits"], json!({ "max": 3 }));
        assert_eq!(out["first_tag"], "b");
        assert_eq!(out["temp"], json!(4.5));
        assert_eq!(out["when"], "2026-11-26T08:00:00Z");
        assert_eq!(out["region"], "eu");
        assert_eq!(out["literal"], "costs ${price}");
        assert_eq!(out["job"], "j1");
        assert_eq!(out["untouched"], json!([1, true, null]));
        assert_eq!(secrets, ["eu"]);
    }

    #[test]
    fn missing_values_are_errors_naming_the_path() {
        let params = json!({ "city": "Chisinau" });
        let mut steps = Map::new();
        steps.insert("weather".into(), json!({ "body": { "temp": 4 } }));
        let run = json!({});
        let env = |_: &str| None;
        let scope = scope_with(&params, &steps, &run, &env);
        let message = |v: Value| render(&v, &scope).unwrap_err().message;
        assert_eq!(
            message(json!("${params.country}")),
            "${params.country}: params.country does not exist; params has city"
        );
        assert_eq!(
            message(json!("x ${steps.weather.body.wind.speed}")),
            "${steps.weather.body.wind.speed}: steps.weather.body.wind does not exist; steps.weather.body has temp"
        );
        assert!(message(json!("${steps.brief.text}")).contains("no step result \"brief\""));
        assert!(message(json!("${env.HOME}")).contains("PIPELINE_ENV_ALLOWLIST"));
    }

    #[test]
    fn syntax_errors_are_reported() {
        for (source, expected) in [
            ("${params.city", "unclosed template"),
            ("${secrets.x}", "unknown name \"secrets\""),
            ("${now+1w}", "use now, now+24h"),
            ("${now*2}", "use now, now+24h"),
            ("${env.}", "env.NAME needs a variable name"),
            ("${params.a[x]}", "[x] is not an index"),
        ] {
            let err = expressions(&json!(source)).unwrap_err().message;
            assert!(err.contains(expected), "{source}: {err}");
        }
        let found = expressions(&json!({ "a": ["${now-15m}", "${steps.x.y}"] })).unwrap();
        assert_eq!(found[0].1, Expr::Now(Duration::minutes(-15)));
        assert_eq!(
            found[1].1,
            Expr::Path {
                root: "steps".into(),
                path: vec![Segment::Key("x".into()), Segment::Key("y".into())]
            }
        );
    }
}
