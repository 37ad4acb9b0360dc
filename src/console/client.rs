//! The console's way into Docket: requests to the JSON API, made in-process with the signed-in
//! user's access token. Every rule the API enforces (roles, validation, dual control, audit) applies
//! to the console unchanged, because the console has no other way to read or change anything.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt;

use crate::auth::principal::ConsoleCall;
use crate::http::middleware::REQUEST_ID_HEADER;

/// The API router (with its state), as the console calls it.
#[derive(Clone)]
pub struct InternalApi {
    pub router: Router,
    pub prefix: String,
}

/// Access and refresh token of a console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

/// Tokens the API handed out during this request (sign-in or refresh); the console middleware turns
/// them into cookies on the response.
#[derive(Clone, Default)]
pub struct NewTokens(pub Arc<Mutex<Option<Tokens>>>);

impl NewTokens {
    pub fn set(&self, tokens: Tokens) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(tokens);
        }
    }

    pub fn take(&self) -> Option<Tokens> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// An API error as the API reported it, or a failure to reach it.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Value,
}

impl ApiFailure {
    fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal".to_owned(),
            message: message.into(),
            details: Value::Null,
        }
    }

    /// The session is over (or never was): the user has to sign in again.
    pub fn needs_sign_in(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
    }

    /// The field the API named as invalid, if any.
    pub fn field(&self) -> Option<&str> {
        self.details.get("field").and_then(Value::as_str)
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    code: String,
    message: String,
    #[serde(default)]
    details: Value,
}

/// A client for one console request: the caller's tokens and where the request came from (so the
/// audit log records the browser's address, not the console's).
#[derive(Clone)]
pub struct Api {
    internal: InternalApi,
    tokens: Arc<Mutex<Option<Tokens>>>,
    new_tokens: NewTokens,
    forwarded: HeaderMap,
    peer: Option<ConnectInfo<SocketAddr>>,
}

impl Api {
    pub fn new(
        internal: InternalApi,
        tokens: Option<Tokens>,
        new_tokens: NewTokens,
        request_headers: &HeaderMap,
        peer: Option<ConnectInfo<SocketAddr>>,
    ) -> Self {
        let mut forwarded = HeaderMap::new();
        for name in [
            header::USER_AGENT,
            REQUEST_ID_HEADER,
            header::HeaderName::from_static("x-forwarded-for"),
        ] {
            if let Some(value) = request_headers.get(&name) {
                forwarded.insert(name, value.clone());
            }
        }
        Self {
            internal,
            tokens: Arc::new(Mutex::new(tokens)),
            new_tokens,
            forwarded,
            peer,
        }
    }

    pub fn has_tokens(&self) -> bool {
        self.tokens.lock().is_ok_and(|t| t.is_some())
    }

    fn access_token(&self) -> Option<String> {
        self.tokens
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|t| t.access.clone()))
    }

    /// Keeps tokens the API just issued, for the following calls and for the response's cookies.
    pub fn adopt(&self, tokens: Tokens) {
        if let Ok(mut slot) = self.tokens.lock() {
            *slot = Some(tokens.clone());
        }
        self.new_tokens.set(tokens);
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiFailure> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ApiFailure> {
        self.json(Method::POST, path, Some(body)).await
    }

    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ApiFailure> {
        self.json(Method::PUT, path, Some(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ApiFailure> {
        self.json(Method::PATCH, path, Some(body)).await
    }

    /// A call whose response has no body worth reading (204, or one the console ignores).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), ApiFailure> {
        let response = self.call(method, path, body).await?;
        check(response).await.map(|_| ())
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ApiFailure> {
        let response = self.call(method, path, body).await?;
        let bytes = check(response).await?;
        // A 204 has no body: it reads as `null`, so callers expecting one ask for an `Option<T>`.
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiFailure::internal(format!("unexpected API response from {path}: {e}")))
    }

    /// The raw response of a successful call, e.g. an attachment's bytes or an event stream.
    pub async fn raw(&self, path: &str) -> Result<Response, ApiFailure> {
        let response = self.call(Method::GET, path, None).await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(failure(response).await)
        }
    }

    /// Sends the request; when the access token has expired, exchanges the refresh token for a new
    /// pair once and tries again.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, ApiFailure> {
        let response = self
            .request(method.clone(), path, body, self.access_token())
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED || !self.refresh().await {
            return Ok(response);
        }
        self.request(method, path, body, self.access_token()).await
    }

    /// Exchanges the refresh token; false when there is none or the API refused it.
    async fn refresh(&self) -> bool {
        let Some(refresh) = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|t| t.refresh.clone()))
        else {
            return false;
        };
        let body = serde_json::json!({ "refresh_token": refresh });
        let Ok(response) = self
            .request(Method::POST, "/auth/refresh", Some(&body), None)
            .await
        else {
            return false;
        };
        let Ok(bytes) = check(response).await else {
            if let Ok(mut slot) = self.tokens.lock() {
                *slot = None;
            }
            return false;
        };
        match serde_json::from_slice::<IssuedTokens>(&bytes) {
            Ok(issued) => {
                self.adopt(issued.into());
                true
            }
            Err(_) => false,
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<String>,
    ) -> Result<Response, ApiFailure> {
        let uri = format!("{}{path}", self.internal.prefix);
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(headers) = builder.headers_mut() {
            headers.extend(self.forwarded.clone());
            if let Some(token) = token
                && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
            {
                headers.insert(header::AUTHORIZATION, value);
            }
        }
        let body = match body {
            Some(value) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        let mut request = builder
            .body(body)
            .map_err(|e| ApiFailure::internal(format!("cannot build the API request: {e}")))?;
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(peer);
        }
        request.extensions_mut().insert(ConsoleCall);
        self.internal
            .router
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| ApiFailure::internal(format!("API call failed: {e}")))
    }
}

/// The token pair in `/auth/login` and `/auth/refresh` responses.
#[derive(Debug, Deserialize)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    #[serde(default)]
    pub mfa_enrolment_required: bool,
}

impl From<IssuedTokens> for Tokens {
    fn from(issued: IssuedTokens) -> Self {
        Self {
            access: issued.access_token,
            refresh: issued.refresh_token,
        }
    }
}

/// The body of a successful response, or the API's error.
async fn check(response: Response) -> Result<Bytes, ApiFailure> {
    if !response.status().is_success() {
        return Err(failure(response).await);
    }
    response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiFailure::internal(format!("cannot read the API response: {e}")))
}

async fn failure(response: Response) -> ApiFailure {
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
        Ok(envelope) => ApiFailure {
            status,
            code: envelope.error.code,
            message: envelope.error.message,
            details: envelope.error.details,
        },
        Err(_) => ApiFailure {
            status,
            code: "error".to_owned(),
            message: format!("The API answered {status}."),
            details: Value::Null,
        },
    }
}
