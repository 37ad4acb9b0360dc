//! Extractors whose rejections use the API error shape instead of axum's plain-text ones.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::ApiError;

/// A JSON request body. Malformed JSON is 400, a body of the wrong shape 422 (with the serde path),
/// a missing `Content-Type: application/json` 415 and an oversized body 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(json_rejection(JsonRejection::MissingJsonContentType(
                Default::default(),
            )));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| json_rejection(JsonRejection::BytesRejection(e)))?;
        if has_escaped_nul(&bytes) {
            // PostgreSQL cannot store NUL in text; refusing it here keeps every backend alike.
            return Err(ApiError::validation(
                "Text in the request body must not contain NUL characters (\\u0000).",
            ));
        }
        parse(&bytes).map(Self)
    }
}

/// Deserializes a JSON body, naming the field at fault: `details.field` is its path
/// (`steps[0].tool`), also for an unknown or a missing field, whose name serde gives only in prose.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let malformed = |e: &serde_json::Error| {
        ApiError::bad_request("malformed_json", "The request body is not valid JSON.")
            .with_details(json!({ "reason": e.to_string() }))
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let error = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => {
            return deserializer
                .end()
                .map(|()| value)
                .map_err(|e| malformed(&e));
        }
        Err(error) => error,
    };
    let inner = error.inner();
    if !inner.is_data() {
        return Err(malformed(inner));
    }
    let path = error.path().to_string();
    let reason = inner.to_string();
    let field = field_at_fault(&path, &reason);
    let message = match &field {
        Some(field) => format!("The field `{field}` is invalid: {reason}"),
        None => format!("The request body does not have the expected fields or types: {reason}"),
    };
    Err(ApiError::validation(message).with_details(json!({ "field": field, "reason": reason })))
}

/// The path of the field a serde data error is about. For a missing field serde's path stops at the
/// enclosing object and the field's name is only in the message (``missing field `x` ``).
fn field_at_fault(path: &str, reason: &str) -> Option<String> {
    let container = (path != ".").then_some(path);
    let missing = reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (container, missing) {
        (Some(container), Some(name)) => Some(format!("{container}.{name}")),
        (None, Some(name)) => Some(name.to_owned()),
        (container, None) => container.map(str::to_owned),
    }
}

/// `Content-Type: application/json` or `application/*+json`, as axum's own extractor accepts.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime.strip_prefix("application/")
                .is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
        })
}

/// Whether a JSON text holds a `\u0000` escape (raw NUL bytes are invalid JSON anyway). An escape
/// starts at a backslash preceded by an even number of backslashes.
fn has_escaped_nul(bytes: &[u8]) -> bool {
    let mut backslashes = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\\' {
            backslashes += 1;
            continue;
        }
        if b == b'u' && backslashes % 2 == 1 && bytes[i + 1..].starts_with(b"0000") {
            return true;
        }
        backslashes = 0;
    }
    false
}

/// An optional JSON body: `None` when the request has no `Content-Type` (no body was sent).
impl<T, S> axum::extract::OptionalFromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if !req.headers().contains_key(header::CONTENT_TYPE) {
            return Ok(None);
        }
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as JSON with `Content-Type: application/json`.",
        ),
        // The body-limit middleware states which limit applied.
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        other => ApiError::new(other.status(), "invalid_body", other.body_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use serde::Deserialize;
    use serde_json::Value;
    use tower::ServiceExt;

    #[derive(Deserialize)]
    struct Greeting {
        name: String,
        times: u8,
    }

    async fn greet(Json(g): Json<Greeting>) -> String {
        g.name.repeat(usize::from(g.times))
    }

    async fn send(content_type: Option<&str>, body: impl Into<Body>) -> (StatusCode, Value) {
        let app = Router::new()
            .route("/", post(greet))
            .layer(DefaultBodyLimit::max(64));
        let mut req = axum::http::Request::post("/");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = app.oneshot(req.body(body.into()).unwrap()).await.unwrap();
        let status = res.status();
        let bytes = to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[test]
    fn escaped_nul_is_found_only_where_it_is_an_escape() {
        assert!(has_escaped_nul(br#"{"a":"x\u0000y"}"#));
        assert!(has_escaped_nul(br#"{"a":"\\\u0000"}"#));
        assert!(!has_escaped_nul(br#"{"a":"\\u0000"}"#));
        assert!(!has_escaped_nul(br#"{"a":"\u0001 u0000"}"#));
        assert!(!has_escaped_nul(br#"{"a":"\u000"}"#));
        assert!(!has_escaped_nul(b"\\u"));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pipeline {
        #[serde(rename = "steps")]
        _steps: Vec<Step>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Step {
        #[serde(rename = "tool")]
        _tool: String,
        #[serde(rename = "retries", default)]
        _retries: u8,
    }

    #[test]
    fn data_errors_name_the_field_at_fault() {
        let field =
            |body: &str| parse::<Pipeline>(body.as_bytes()).unwrap_err().details["field"].clone();
        assert_eq!(field(r#"{"steps":[],"stepz":1}"#), "stepz");
        assert_eq!(
            field(r#"{"steps":[{"tool":"a"},{"tool":"b","bogus":1}]}"#),
            "steps[1].bogus"
        );
        assert_eq!(
            field(r#"{"steps":[{"tool":"a","retries":"x"}]}"#),
            "steps[0].retries"
        );
        assert_eq!(field(r#"{"steps":[{"retries":1}]}"#), "steps[0].tool");
        assert_eq!(field(r#"{}"#), "steps");
        assert_eq!(field(r#"[]"#), Value::Null);
        let error = parse::<Pipeline>(br#"{"steps":[]} trailing"#).unwrap_err();
        assert_eq!(error.code, "malformed_json");
    }

    #[tokio::test]
    async fn valid_body_is_accepted() {
        let app = Router::new().route("/", post(greet));
        let req = axum::http::Request::post("/")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"name":"ab","times":2}"#))
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(to_bytes(res.into_body(), 100).await.unwrap(), "abab");
    }

    #[tokio::test]
    async fn rejections_use_the_error_shape() {
        let json = Some("application/json");
        let cases = [
            (json, "{not json", StatusCode::BAD_REQUEST, "malformed_json"),
            (
                json,
                r#"{"name":"a","times":"x"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
            ),
            (
                json,
                r#"{"name":"a"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
            ),
            (
                None,
                r#"{"name":"a","times":1}"#,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
        ];
        for (content_type, body, status, code) in cases {
            let (got_status, got) = send(content_type, body).await;
            assert_eq!(got_status, status, "{body}");
            assert_eq!(got["error"]["code"], code, "{body}: {got}");
            assert!(
                got["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
        let (status, got) = send(
            json,
            format!(r#"{{"name":"{}","times":1}}"#, "x".repeat(100)),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(got["error"]["code"], "payload_too_large");
    }
}
