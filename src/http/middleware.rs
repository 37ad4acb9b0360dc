//! The middleware every response passes through: request IDs, request logs, metrics, panics,
//! CORS, compression, timeouts, body limits and the JSON error shape for errors produced outside
//! our handlers.

use std::any::Any;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, Response, StatusCode, header};
use axum::middleware::Next;
use axum::response::IntoResponse;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any as AnyOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use super::error::{ApiError, UnstatedBodyLimit};
use crate::config::Config;
use crate::telemetry::{HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Client-supplied request IDs longer than this are replaced, so logs cannot be flooded through it.
const MAX_CLIENT_REQUEST_ID_LEN: usize = 128;

/// Wraps `router` in the common middleware. Layers are added innermost first: the last one added
/// sees the request first and the response last.
pub fn apply(router: Router, config: &Config) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(
            BodyLimits {
                default: config.max_body_bytes,
                upload: crate::cases::attachments::max_request_body(config.max_attachment_bytes),
                document: config.max_document_bytes + crate::knowledge::http::MULTIPART_OVERHEAD,
            },
            limit_body,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(axum::middleware::from_fn(refuse_nul_in_uri))
        .layer(axum::middleware::from_fn(json_error_bodies))
        .layer(cors(config))
        .layer(CompressionLayer::new())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_failure(()),
        )
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            hsts(config),
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, NewRequestId))
        .layer(axum::middleware::from_fn(drop_unusable_request_id))
}

/// API responses are data, never documents: nothing may load or frame them. HTML pages (docs, the
/// console) set their own, wider policy.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// HSTS only in production, where TLS terminates in front of Docket; in development it would pin
/// browsers to HTTPS on localhost.
fn hsts(config: &Config) -> Option<HeaderValue> {
    (config.environment == crate::config::Environment::Production)
        .then(|| HeaderValue::from_static("max-age=31536000; includeSubDomains"))
}

/// A client-supplied `X-Request-ID` is kept when it is short and plain (it ends up in every log
/// line of the request); otherwise it is dropped and a new one is made.
async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response<Body> {
    let usable = request.headers().get(REQUEST_ID_HEADER).is_none_or(|v| {
        !v.is_empty()
            && v.len() <= MAX_CLIENT_REQUEST_ID_LEN
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    if !usable {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    next.run(request).await
}

/// Makes a time-ordered UUID for requests that arrive without a usable ID.
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

fn request_span(request: &Request<Body>) -> Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}

fn log_response(response: &Response<Body>, latency: Duration, _span: &Span) {
    tracing::info!(
        status = response.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        "request completed"
    );
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "request handler panicked");
    ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
}

fn cors(config: &Config) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            REQUEST_ID_HEADER,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([REQUEST_ID_HEADER])
        .max_age(Duration::from_secs(600));
    if config.cors_origins.iter().any(|o| o == "*") {
        base.allow_origin(AnyOrigin)
    } else {
        let origins: Vec<HeaderValue> = config
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        base.allow_origin(AllowOrigin::list(origins))
    }
}

/// Responses that layers or axum itself produce for errors (405, 408, 413, …) carry no body or a
/// plain-text one; give them the API error shape so clients parse every error the same way.
async fn json_error_bodies(request: Request, next: Next) -> Response<Body> {
    let response = next.run(request).await;
    let status = response.status();
    // The console's HTML error pages are meant for people and stay as they are.
    let is_json_or_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json_or_page {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let replacement = ApiError::from_status(status).into_response();
    let (new_parts, body) = replacement.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    if let Some(ct) = new_parts.headers.get(header::CONTENT_TYPE) {
        parts.headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    Response::from_parts(parts, body)
}

/// A NUL character (`%00`) in the path or query is refused with 400: no identifier or filter holds
/// one, and PostgreSQL cannot take one in a text parameter (it would fail as a 500).
async fn refuse_nul_in_uri(request: Request, next: Next) -> Response<Body> {
    let uri = request.uri();
    let has_nul = |text: &str| text.as_bytes().windows(3).any(|w| w == b"%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::bad_request(
            "invalid_characters",
            "The path and query must not contain NUL characters (%00).",
        )
        .into_response();
    }
    next.run(request).await
}

/// Body size caps: `MAX_BODY_BYTES` everywhere except file uploads.
#[derive(Clone, Copy)]
struct BodyLimits {
    default: usize,
    upload: usize,
    document: usize,
}

/// The cap that applies to one request, and the setting that raises it.
#[derive(Clone, Copy)]
struct BodyLimit {
    bytes: usize,
    setting: &'static str,
}

impl BodyLimit {
    fn refusal(self) -> Response<Body> {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "The request body is larger than the limit of {} bytes (set by {}).",
                self.bytes, self.setting
            ),
        )
        .with_details(json!({ "limit_bytes": self.bytes, "setting": self.setting }))
        .into_response()
    }
}

/// Refuses bodies over the route's cap: at once when `Content-Length` says so, otherwise when the
/// streamed body passes it (extractors then answer 413, and this states the limit in their answer).
async fn limit_body(
    axum::extract::State(limits): axum::extract::State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let post = request.method() == axum::http::Method::POST;
    let limit = if post && route.ends_with(crate::cases::attachments::UPLOAD_ROUTE_SUFFIX) {
        BodyLimit {
            bytes: limits.upload,
            setting: "MAX_ATTACHMENT_MB",
        }
    } else if post && route.ends_with(crate::knowledge::http::DOCUMENTS_ROUTE_SUFFIX) {
        BodyLimit {
            bytes: limits.document,
            setting: "MAX_DOCUMENT_MB",
        }
    } else {
        BodyLimit {
            bytes: limits.default,
            setting: "MAX_BODY_BYTES",
        }
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.bytes as u64) {
        return limit.refusal();
    }
    let (parts, body) = request.into_parts();
    let body = Body::new(http_body_util::Limited::new(body, limit.bytes));
    let response = next.run(Request::from_parts(parts, body)).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let unstated = response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && (!is_json || response.extensions().get::<UnstatedBodyLimit>().is_some());
    if unstated { limit.refusal() } else { response }
}

/// Request count and latency per route template (not per raw path, which would explode the series).
async fn record_metrics(request: Request, next: Next) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!(HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use axum::routing::get;
    use serde_json::Value;
    use tower::ServiceExt;

    fn config(vars: &[(&str, &str)]) -> Config {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned()).unwrap()
    }

    async fn call(router: Router, path: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_500_json_error() {
        let router = Router::new().route("/boom", get(|| async { panic!("kaboom") as &str }));
        let (status, headers, body) = call(apply(router.clone(), &config(&[])), "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(
            !body.to_string().contains("kaboom"),
            "panic text must not leak"
        );
        assert!(headers.contains_key(REQUEST_ID_HEADER));
        // The service keeps working after a panic.
        let (status, _, _) = call(apply(router, &config(&[])), "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_times_out_with_a_408_json_error() {
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        );
        let (status, _, body) = call(
            apply(router, &config(&[("REQUEST_TIMEOUT_SECONDS", "5")])),
            "/slow",
        )
        .await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(body["error"]["code"], "request_timeout");
    }
}
