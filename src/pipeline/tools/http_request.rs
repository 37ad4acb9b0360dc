//! `http.request`: one HTTP(S) call from a pipeline step.
//!
//! The point of this tool is that a pipeline must not become a way into internal services. Every
//! destination is resolved here, every address it resolves to is checked (loopback, private,
//! link-local, metadata, unique-local, CGNAT, documentation, multicast, … are refused unless
//! `HTTP_TOOL_ALLOWED_HOSTS` lists the host), and the client is then pinned to exactly the checked
//! addresses so a DNS answer that changes between check and connect (rebinding) is never used.
//! Redirects are followed by hand, re-checking each new host; proxies from the environment are
//! ignored, since a proxy would resolve the name itself.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use url::{Host, Url};

use super::{ToolContext, ToolError, ToolFuture, ToolResult, parse_input, schema_of};
use crate::config::Config;

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;
/// Bounds of `timeout_seconds`.
pub const MAX_TIMEOUT_SECONDS: u64 = 300;
/// Sent unless the step sets its own `User-Agent`.
pub const USER_AGENT: &str = concat!("docket/", env!("CARGO_PKG_VERSION"));
/// How much of an error response's body is read for the error message.
const ERROR_BODY_READ: usize = 4096;
/// How many characters of it the message shows.
const ERROR_EXCERPT_CHARS: usize = 200;

/// Request headers a step may not set: the client frames the request itself.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// Credentials dropped when a redirect leaves the original scheme, host and port.
const CROSS_ORIGIN_STRIPPED: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
];

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

/// HTTP method: GET (default), POST, PUT, PATCH, DELETE or HEAD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl Method {
    fn as_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
            Method::Head => reqwest::Method::HEAD,
        }
    }
}

/// `with` of an `http.request` step.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    // Documented on the enum: a field doc comment makes utoipa wrap the inline enum in `allOf`.
    #[serde(default)]
    #[schema(inline)]
    pub method: Method,
    /// Absolute http:// or https:// URL.
    pub url: String,
    /// Request headers, name to value.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// A JSON request body (sent with `Content-Type: application/json` unless a header says
    /// otherwise). Not together with `body`.
    #[serde(default)]
    pub json: Option<Value>,
    /// A text request body. Not together with `json`.
    #[serde(default)]
    pub body: Option<String>,
    /// 1 to 300; never more than the step's own timeout, which is also the default.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 300)]
    pub timeout_seconds: Option<u64>,
    /// Status codes that count as success; default any 2xx. A listed 3xx is returned rather than
    /// followed.
    #[serde(default)]
    pub expect_status: Option<Vec<u16>>,
}

/// A checked [`Input`], ready to send.
#[derive(Debug, Clone)]
struct Prepared {
    method: reqwest::Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    /// Requested timeout, before the step's cap.
    timeout: Option<Duration>,
    expect_status: Option<Vec<StatusCode>>,
}

impl Input {
    /// Checks what serde cannot: URL and scheme, header syntax, one body at most, ranges.
    fn prepare(self) -> Result<Prepared, ToolError> {
        let bad = |msg: String| ToolError::permanent(format!("invalid input: {msg}"));

        let url = Url::parse(self.url.trim()).map_err(|e| bad(format!("url: {e}")))?;
        check_scheme(&url).map_err(|e| bad(format!("url: {e}")))?;

        let mut headers = HeaderMap::new();
        for (name, value) in self.headers.unwrap_or_default() {
            let header_name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| bad(format!("headers: {name:?} is not a valid header name")))?;
            if FORBIDDEN_HEADERS.contains(&header_name.as_str()) {
                return Err(bad(format!(
                    "headers: {header_name} is set by the client and may not be given"
                )));
            }
            let header_value = HeaderValue::from_str(&value).map_err(|_| {
                bad(format!(
                    "headers: the value of {name} is not a valid header value"
                ))
            })?;
            headers.append(header_name, header_value);
        }

        let body = match (self.json, self.body) {
            (Some(_), Some(_)) => return Err(bad("give json or body, not both".into())),
            (Some(json), None) => {
                if !headers.contains_key(header::CONTENT_TYPE) {
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
                Some(serde_json::to_vec(&json).map_err(|e| bad(format!("json: {e}")))?)
            }
            (None, Some(text)) => Some(text.into_bytes()),
            (None, None) => None,
        };

        let timeout = match self.timeout_seconds {
            None => None,
            Some(s) if (1..=MAX_TIMEOUT_SECONDS).contains(&s) => Some(Duration::from_secs(s)),
            Some(s) => {
                return Err(bad(format!(
                    "timeout_seconds must be 1 to {MAX_TIMEOUT_SECONDS}, got {s}"
                )));
            }
        };

        let expect_status = match self.expect_status {
            None => None,
            Some(codes) if codes.is_empty() => {
                return Err(bad(
                    "expect_status must list at least one status code".into()
                ));
            }
            Some(codes) => Some(
                codes
                    .into_iter()
                    .map(|c| {
                        StatusCode::from_u16(c)
                            .ok()
                            .filter(|_| (100..=599).contains(&c))
                            .ok_or_else(|| bad(format!("expect_status: {c} is not an HTTP status")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };

        Ok(Prepared {
            method: self.method.as_reqwest(),
            url,
            headers,
            body,
            timeout,
            expect_status,
        })
    }
}

fn check_scheme(url: &Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {} is not allowed; use http or https",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err("has no host".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Address classification
// ---------------------------------------------------------------------------------------------

/// Why an address is not reachable without an allow-list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restricted {
    Unspecified,
    Loopback,
    Private,
    SharedCgnat,
    LinkLocal,
    UniqueLocal,
    SiteLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    Reserved,
}

impl Restricted {
    /// "a loopback address", for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Restricted::Unspecified => "an unspecified (this-host) address",
            Restricted::Loopback => "a loopback address",
            Restricted::Private => "a private (RFC 1918) address",
            Restricted::SharedCgnat => "a shared carrier-grade NAT (100.64.0.0/10) address",
            Restricted::LinkLocal => "a link-local address (including cloud metadata endpoints)",
            Restricted::UniqueLocal => "a unique-local IPv6 address",
            Restricted::SiteLocal => "a site-local IPv6 address",
            Restricted::Multicast => "a multicast address",
            Restricted::Broadcast => "a broadcast address",
            Restricted::Documentation => "a documentation address",
            Restricted::Benchmarking => "a benchmarking address",
            Restricted::Reserved => "a reserved or non-global address",
        }
    }
}

/// IPv4 ranges, most specific first.
const V4_RANGES: &[([u8; 4], u8, Restricted)] = &[
    ([255, 255, 255, 255], 32, Restricted::Broadcast),
    ([0, 0, 0, 0], 8, Restricted::Unspecified),
    ([10, 0, 0, 0], 8, Restricted::Private),
    ([100, 64, 0, 0], 10, Restricted::SharedCgnat),
    ([127, 0, 0, 0], 8, Restricted::Loopback),
    ([169, 254, 0, 0], 16, Restricted::LinkLocal),
    ([172, 16, 0, 0], 12, Restricted::Private),
    ([192, 0, 0, 0], 24, Restricted::Reserved),
    ([192, 0, 2, 0], 24, Restricted::Documentation),
    ([192, 88, 99, 0], 24, Restricted::Reserved),
    ([192, 168, 0, 0], 16, Restricted::Private),
    ([198, 18, 0, 0], 15, Restricted::Benchmarking),
    ([198, 51, 100, 0], 24, Restricted::Documentation),
    ([203, 0, 113, 0], 24, Restricted::Documentation),
    ([224, 0, 0, 0], 4, Restricted::Multicast),
    ([240, 0, 0, 0], 4, Restricted::Reserved),
];

/// IPv6 ranges, most specific first (the forms embedding an IPv4 address are handled before).
const V6_RANGES: &[(u128, u8, Restricted)] = &[
    (0, 128, Restricted::Unspecified),
    (1, 128, Restricted::Loopback),
    // Local-use NAT64 (RFC 8215).
    (
        0x0064_ff9b_0001_0000_0000_0000_0000_0000,
        48,
        Restricted::Reserved,
    ),
    // IPv4-compatible (deprecated), SIIT and the rest of the IETF-reserved ::/8.
    (0, 8, Restricted::Reserved),
    // Discard-only (RFC 6666).
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        Restricted::Reserved,
    ),
    (
        0x2001_0002_0000_0000_0000_0000_0000_0000,
        48,
        Restricted::Benchmarking,
    ),
    // Teredo tunnels, which embed an obfuscated IPv4 address.
    (
        0x2001_0000_0000_0000_0000_0000_0000_0000,
        32,
        Restricted::Reserved,
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        Restricted::Documentation,
    ),
    (
        0x3fff_0000_0000_0000_0000_0000_0000_0000,
        20,
        Restricted::Documentation,
    ),
    // SRv6 segment identifiers (RFC 9602).
    (
        0x5f00_0000_0000_0000_0000_0000_0000_0000,
        16,
        Restricted::Reserved,
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        Restricted::UniqueLocal,
    ),
    (
        0xfe80_0000_0000_0000_0000_0000_0000_0000,
        10,
        Restricted::LinkLocal,
    ),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        Restricted::SiteLocal,
    ),
    (
        0xff00_0000_0000_0000_0000_0000_0000_0000,
        8,
        Restricted::Multicast,
    ),
];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from_be_bytes(net) & mask
}

fn in_v6(ip: u128, net: u128, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    ip & mask == net & mask
}

/// The IPv4 address an IPv6 address carries, for the forms that deliver to it: IPv4-mapped
/// (`::ffff:a.b.c.d`), well-known NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if in_v6(bits, 0xffff_0000_0000, 96) || in_v6(bits, 0x0064_ff9b << 96, 96) {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if in_v6(bits, 0x2002 << 112, 16) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// `None` for a public address; otherwise why it is refused by default.
pub fn classify(ip: IpAddr) -> Option<Restricted> {
    match ip {
        IpAddr::V4(v4) => V4_RANGES
            .iter()
            .find(|(net, len, _)| in_v4(v4, *net, *len))
            .map(|(_, _, kind)| *kind),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return classify(IpAddr::V4(v4));
            }
            let bits = u128::from(v6);
            if let Some((_, _, kind)) = V6_RANGES
                .iter()
                .find(|(net, len, _)| in_v6(bits, *net, *len))
            {
                return Some(*kind);
            }
            // Only 2000::/3 is allocated as global unicast.
            if !in_v6(bits, 0x2000 << 112, 3) {
                return Some(Restricted::Reserved);
            }
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Allow-list
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowEntry {
    /// Exact host name, lower case, no trailing dot.
    Host(String),
    /// `*.example.com` kept as `.example.com`: matches names below it, not `example.com` itself.
    Suffix(String),
    /// A literal address (as a single-address network) or a CIDR block.
    Net(IpNet),
}

/// Parsed `HTTP_TOOL_ALLOWED_HOSTS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<AllowEntry>,
}

fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl AllowList {
    /// Entries as in the configuration; ones that cannot match anything are logged and skipped.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Self {
        let mut parsed = Vec::new();
        for raw in entries {
            let raw = raw.as_ref().trim();
            let unbracketed = raw.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = IpAddr::from_str(unbracketed) {
                parsed.push(AllowEntry::Net(IpNet::from(ip)));
            } else if let Ok(net) = IpNet::from_str(raw) {
                parsed.push(AllowEntry::Net(net.trunc()));
            } else if let Some(suffix) = raw.strip_prefix("*.") {
                let suffix = normalize_host(suffix);
                if suffix.is_empty() || suffix.contains(['*', '/', ':']) {
                    tracing::warn!(entry = raw, "HTTP_TOOL_ALLOWED_HOSTS: ignoring entry");
                } else {
                    parsed.push(AllowEntry::Suffix(format!(".{suffix}")));
                }
            } else {
                let host = normalize_host(raw);
                if host.is_empty() || host.contains(['*', '/', ':']) {
                    tracing::warn!(
                        entry = raw,
                        "HTTP_TOOL_ALLOWED_HOSTS: ignoring entry (use a host name, *.suffix, an IP or a CIDR; no ports)"
                    );
                } else {
                    parsed.push(AllowEntry::Host(host));
                }
            }
        }
        Self { entries: parsed }
    }

    /// Whether the host name matches a name or `*.suffix` entry.
    pub fn allows_name(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.entries.iter().any(|e| match e {
            AllowEntry::Host(h) => *h == host,
            AllowEntry::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            AllowEntry::Net(_) => false,
        })
    }

    /// Whether an IP or CIDR entry contains the address (IPv4-mapped forms count as IPv4).
    pub fn allows_addr(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.entries.iter().any(|e| match e {
            AllowEntry::Net(net) => net.contains(&ip) || net.contains(&canonical),
            _ => false,
        })
    }

    /// Whether `host`, resolved to `ip`, may be reached although `ip` is restricted.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        self.allows_name(host) || self.allows_addr(ip)
    }
}

// ---------------------------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------------------------

/// What the tool takes from [`Config`].
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub allowed_hosts: AllowList,
    pub max_response_bytes: usize,
}

impl HttpSettings {
    pub fn new<S: AsRef<str>>(allowed_hosts: &[S], max_response_bytes: usize) -> Self {
        // Idempotent; the client cannot be built without a rustls provider.
        crate::tls::install_crypto_provider();
        Self {
            allowed_hosts: AllowList::parse(allowed_hosts),
            max_response_bytes,
        }
    }

    pub fn from_config(config: &Config) -> Self {
        Self::new(
            &config.http_tool_allowed_hosts,
            config.http_tool_max_response_bytes,
        )
    }
}

/// Host and path (no query, which may carry secrets) for messages.
fn describe_url(url: &Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + url.path()
}

/// Resolves the URL's host and checks every address; returns the addresses to connect to.
async fn checked_addrs(settings: &HttpSettings, url: &Url) -> Result<Vec<SocketAddr>, ToolError> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| ToolError::permanent(format!("{} has no port", describe_url(url))))?;
    let refuse = |host: &str, ip: IpAddr, kind: Restricted, literal: bool| {
        let what = if literal {
            format!("{ip} is {}", kind.describe())
        } else {
            format!("it resolves to {ip}, {}", kind.describe())
        };
        ToolError::permanent(format!(
            "http.request refused host {host}: {what}; add it to HTTP_TOOL_ALLOWED_HOSTS to allow"
        ))
    };
    match url.host() {
        Some(Host::Ipv4(v4)) => {
            let ip = IpAddr::V4(v4);
            match classify(ip) {
                Some(kind) if !settings.allowed_hosts.allows_addr(ip) => {
                    Err(refuse(&v4.to_string(), ip, kind, true))
                }
                _ => Ok(vec![SocketAddr::new(ip, port)]),
            }
        }
        Some(Host::Ipv6(v6)) => {
            let ip = IpAddr::V6(v6);
            match classify(ip) {
                Some(kind) if !settings.allowed_hosts.allows_addr(ip) => {
                    Err(refuse(&format!("[{v6}]"), ip, kind, true))
                }
                _ => Ok(vec![SocketAddr::new(ip, port)]),
            }
        }
        Some(Host::Domain(domain)) => {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((domain, port))
                .await
                .map_err(|e| ToolError::transient(format!("could not resolve {domain}: {e}")))?
                .collect();
            if resolved.is_empty() {
                return Err(ToolError::transient(format!(
                    "could not resolve {domain}: no addresses"
                )));
            }
            let name_allowed = settings.allowed_hosts.allows_name(domain);
            for addr in &resolved {
                let ip = addr.ip();
                if let Some(kind) = classify(ip)
                    && !name_allowed
                    && !settings.allowed_hosts.allows_addr(ip)
                {
                    return Err(refuse(domain, ip, kind, false));
                }
            }
            Ok(resolved)
        }
        None => Err(ToolError::permanent(format!(
            "{} has no host",
            describe_url(url)
        ))),
    }
}

/// A client that connects only to `addrs` for the URL's host, follows no redirects and uses no
/// proxy.
fn pinned_client(url: &Url, addrs: &[SocketAddr]) -> Result<reqwest::Client, ToolError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(USER_AGENT);
    if let Some(Host::Domain(domain)) = url.host() {
        builder = builder.resolve_to_addrs(domain, addrs);
    }
    builder
        .build()
        .map_err(|e| ToolError::permanent(format!("could not build the HTTP client: {e}")))
}

fn transport_error(target: &str, e: reqwest::Error) -> ToolError {
    let e = e.without_url();
    let mut message = if e.is_timeout() {
        format!("{target}: timed out")
    } else if e.is_connect() {
        format!("{target}: could not connect")
    } else {
        format!("{target}: request failed")
    };
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(err) = source {
        message.push_str(": ");
        message.push_str(&err.to_string());
        source = err.source();
    }
    if e.is_builder() {
        ToolError::permanent(message)
    } else {
        ToolError::transient(message)
    }
}

/// Reads at most `limit` bytes; `Ok((bytes, true))` when there was more.
async fn read_limited(
    response: &mut Response,
    limit: usize,
    target: &str,
) -> Result<(Vec<u8>, bool), ToolError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(target, e))?
    {
        if body.len() + chunk.len() > limit {
            let room = limit - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(name.as_str().to_owned(), Value::String(joined));
    }
    Value::Object(out)
}

fn excerpt(body: &[u8], truncated: bool) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = collapsed.chars().take(ERROR_EXCERPT_CHARS).collect();
    if truncated || collapsed.chars().count() > ERROR_EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// Whether a redirect keeps scheme, host and port.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The whole call: checks, sends, follows redirects, reads the body. `step_timeout` caps the
/// input's `timeout_seconds` and bounds everything, DNS included.
pub async fn execute(
    settings: &HttpSettings,
    input: Input,
    step_timeout: Duration,
) -> Result<Value, ToolError> {
    let prepared = input.prepare()?;
    let timeout = prepared
        .timeout
        .map_or(step_timeout, |t| t.min(step_timeout));
    let target = format!("{} {}", prepared.method, describe_url(&prepared.url));
    match tokio::time::timeout(timeout, send(settings, prepared)).await {
        Ok(result) => result,
        Err(_) => Err(ToolError::transient(format!(
            "{target}: timed out after {} ms",
            timeout.as_millis()
        ))),
    }
}

async fn send(settings: &HttpSettings, prepared: Prepared) -> Result<Value, ToolError> {
    let started = Instant::now();
    let Prepared {
        mut method,
        mut url,
        mut headers,
        mut body,
        expect_status,
        ..
    } = prepared;
    let acceptable = |status: StatusCode| match &expect_status {
        Some(codes) => codes.contains(&status),
        None => status.is_success(),
    };

    let mut redirects = 0;
    loop {
        let target = format!("{method} {}", describe_url(&url));
        let addrs = checked_addrs(settings, &url).await.map_err(|e| {
            if redirects == 0 {
                e
            } else {
                ToolError {
                    message: format!("{} (after {redirects} redirect(s))", e.message),
                    ..e
                }
            }
        })?;
        let client = pinned_client(&url, &addrs)?;
        let mut request = client
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if let Some(bytes) = &body {
            request = request.body(bytes.clone());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| transport_error(&target, e))?;
        let status = response.status();

        if status.is_redirection()
            && !acceptable(status)
            && let Some(location) = response.headers().get(header::LOCATION)
        {
            if redirects == MAX_REDIRECTS {
                return Err(ToolError::permanent(format!(
                    "{target}: more than {MAX_REDIRECTS} redirects"
                )));
            }
            let location = location.to_str().map_err(|_| {
                ToolError::permanent(format!("{target}: redirect Location is not valid text"))
            })?;
            let next = url.join(location).map_err(|e| {
                ToolError::permanent(format!("{target}: bad redirect Location {location:?}: {e}"))
            })?;
            check_scheme(&next).map_err(|e| {
                ToolError::permanent(format!("{target}: redirect to a URL that {e}"))
            })?;
            // 301/302 turn POST into GET, as browsers do; 303 turns everything but HEAD into
            // GET; 307/308 repeat the request as it was.
            let to_get = match status {
                StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => {
                    method == reqwest::Method::POST
                }
                StatusCode::SEE_OTHER => method != reqwest::Method::HEAD,
                _ => false,
            };
            if to_get {
                method = reqwest::Method::GET;
                body = None;
                headers.remove(header::CONTENT_TYPE);
                headers.remove(header::CONTENT_ENCODING);
            }
            if !same_origin(&url, &next) {
                for name in CROSS_ORIGIN_STRIPPED {
                    headers.remove(name);
                }
            }
            url = next;
            redirects += 1;
            continue;
        }

        if !acceptable(status) {
            let (bytes, truncated) = read_limited(&mut response, ERROR_BODY_READ, &target)
                .await
                .unwrap_or_default();
            let mut message = format!("{target} returned {status}");
            let excerpt = excerpt(&bytes, truncated);
            if !excerpt.is_empty() {
                message.push_str(": ");
                message.push_str(&excerpt);
            }
            let retryable = status.is_server_error()
                || status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS;
            return Err(if retryable {
                ToolError::transient(message)
            } else {
                ToolError::permanent(message)
            });
        }

        let too_big = || {
            ToolError::permanent(format!(
                "{target}: response body is larger than HTTP_TOOL_MAX_RESPONSE_BYTES ({} bytes)",
                settings.max_response_bytes
            ))
        };
        if response
            .content_length()
            .is_some_and(|n| n > settings.max_response_bytes as u64)
        {
            return Err(too_big());
        }
        let (bytes, truncated) =
            read_limited(&mut response, settings.max_response_bytes, &target).await?;
        if truncated {
            return Err(too_big());
        }
        let response_headers = response.headers();
        let body = if is_json(response_headers) {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        };
        return Ok(serde_json::json!({
            "status": status.as_u16(),
            "headers": headers_json(response_headers),
            "body": body,
            "elapsed_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// The tool
// ---------------------------------------------------------------------------------------------

/// The `http.request` tool.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    settings: HttpSettings,
}

impl HttpRequest {
    pub fn new(config: &Config) -> Self {
        Self::with_settings(HttpSettings::from_config(config))
    }

    pub fn with_settings(settings: HttpSettings) -> Self {
        Self { settings }
    }
}

impl super::Tool for HttpRequest {
    fn name(&self) -> &'static str {
        "http.request"
    }

    fn description(&self) -> &'static str {
        "Makes one HTTP(S) request to a public host (or one listed in HTTP_TOOL_ALLOWED_HOSTS) and returns status, headers and body."
    }

    fn input_schema(&self) -> Value {
        schema_of::<Input>()
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let input: Input = parse_input(input)?;
            execute(&self.settings, input, ctx.timeout)
                .await
                .map(ToolResult::Done)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // ----- classifier -----------------------------------------------------------------------

    #[test]
    fn classifies_addresses() {
        use Restricted::*;
        let table: &[(&str, Option<Restricted>)] = &[
            // IPv4
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("10.0.0.1", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("100.63.255.255", None),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("100.128.0.0", None),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.0.1", Some(LinkLocal)),
            ("172.15.255.255", None),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.10", Some(Documentation)),
            ("192.88.99.1", Some(Reserved)),
            ("192.168.1.1", Some(Private)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.200", Some(Documentation)),
            ("224.0.0.251", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("192.0.3.1", None),
            // IPv6
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:7f00:1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:100.64.1.1", Some(SharedCgnat)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Reserved)),
            ("::ffff:0:127.0.0.1", Some(Reserved)),
            ("64:ff9b::127.0.0.1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("64:ff9b::8.8.8.8", None),
            ("64:ff9b:1::1", Some(Reserved)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:c0a8:101::1", Some(Private)),
            ("2002:808:808::1", None),
            ("100::1", Some(Reserved)),
            ("2001::1", Some(Reserved)),
            ("2001:2::1", Some(Benchmarking)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(UniqueLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(SiteLocal)),
            ("ff02::1", Some(Multicast)),
            ("4000::1", Some(Reserved)),
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
        ];
        for (text, expected) in table {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(classify(ip), *expected, "{text}");
        }
    }

    #[test]
    fn descriptions_name_the_kind() {
        assert_eq!(Restricted::Loopback.describe(), "a loopback address");
        assert!(Restricted::LinkLocal.describe().contains("metadata"));
    }

    // ----- allow-list -----------------------------------------------------------------------

    #[test]
    fn allow_list_matches_names_and_wildcards() {
        let list = AllowList::parse(&["api.internal", "*.corp.example.com", "Upper.Example."]);
        assert!(list.allows_name("api.internal"));
        assert!(list.allows_name("API.Internal."));
        assert!(!list.allows_name("other.internal"));
        assert!(!list.allows_name("xapi.internal"));
        assert!(list.allows_name("a.corp.example.com"));
        assert!(list.allows_name("a.b.corp.example.com"));
        assert!(
            !list.allows_name("corp.example.com"),
            "wildcard needs a label"
        );
        assert!(!list.allows_name("evilcorp.example.com"));
        assert!(!list.allows_name("corp.example.com.evil.net"));
        assert!(list.allows_name("upper.example"));
        // Names never match addresses.
        assert!(!list.allows_addr("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn allow_list_matches_ips_and_cidrs() {
        let list = AllowList::parse(&[
            "127.0.0.1",
            "10.1.0.0/16",
            "[::1]",
            "fd00::/8",
            "192.168.1.7/24",
        ]);
        let yes = [
            "127.0.0.1",
            "10.1.2.3",
            "::1",
            "fd12::5",
            "::ffff:127.0.0.1",
            "::ffff:10.1.9.9",
            "192.168.1.200",
        ];
        let no = [
            "127.0.0.2",
            "10.2.0.1",
            "::2",
            "fc00::1",
            "169.254.169.254",
            "192.168.2.1",
        ];
        for ip in yes {
            assert!(list.allows_addr(ip.parse().unwrap()), "{ip}");
        }
        for ip in no {
            assert!(!list.allows_addr(ip.parse().unwrap()), "{ip}");
        }
        assert!(list.allows("anything", "10.1.0.9".parse().unwrap()));
        assert!(!list.allows("10.1.0.9", "10.9.0.9".parse().unwrap()));
    }

    #[test]
    fn allow_list_skips_unusable_entries() {
        let list = AllowList::parse(&["", "*", "*.", "host:8080", "10.0.0.0/99", "ok.example"]);
        assert_eq!(list.entries, vec![AllowEntry::Host("ok.example".into())]);
        assert!(AllowList::default().entries.is_empty());
    }

    // ----- input ----------------------------------------------------------------------------

    fn input(value: Value) -> Result<Prepared, ToolError> {
        parse_input::<Input>(value)?.prepare()
    }

    fn err(value: Value) -> String {
        let e = input(value).unwrap_err();
        assert!(!e.retryable);
        e.message
    }

    #[test]
    fn input_defaults_and_bodies() {
        let p = input(json!({"url": "https://example.com/x?y=1"})).unwrap();
        assert_eq!(p.method, reqwest::Method::GET);
        assert_eq!(p.url.as_str(), "https://example.com/x?y=1");
        assert!(p.body.is_none() && p.timeout.is_none() && p.expect_status.is_none());

        let p = input(json!({"method": "POST", "url": "http://example.com", "json": {"a": 1}}))
            .unwrap();
        assert_eq!(p.method, reqwest::Method::POST);
        assert_eq!(p.body.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(p.headers[header::CONTENT_TYPE], "application/json");

        let p = input(json!({
            "method": "PUT", "url": "http://example.com", "body": "hi",
            "headers": {"Content-Type": "text/plain", "X-Key": "v"},
            "timeout_seconds": 300, "expect_status": [200, 404]
        }))
        .unwrap();
        assert_eq!(p.body.as_deref(), Some(&b"hi"[..]));
        assert_eq!(p.headers["content-type"], "text/plain");
        assert_eq!(p.headers["x-key"], "v");
        assert_eq!(p.timeout, Some(Duration::from_secs(300)));
        assert_eq!(
            p.expect_status,
            Some(vec![StatusCode::OK, StatusCode::NOT_FOUND])
        );
    }

    #[test]
    fn input_rejects_bad_values() {
        assert!(err(json!({"url": "http://x", "bogus": 1})).contains("unknown field"));
        assert!(err(json!({})).contains("missing field `url`"));
        assert!(err(json!({"url": "http://x", "method": "TRACE"})).contains("unknown variant"));
        assert!(err(json!({"url": "ftp://example.com/f"})).contains("scheme ftp"));
        assert!(err(json!({"url": "file:///etc/passwd"})).contains("scheme file"));
        assert!(err(json!({"url": "/relative"})).contains("url"));
        assert!(err(json!({"url": "http://x", "json": {}, "body": "b"})).contains("not both"));
        assert!(err(json!({"url": "http://x", "timeout_seconds": 0})).contains("timeout_seconds"));
        assert!(
            err(json!({"url": "http://x", "timeout_seconds": 301})).contains("timeout_seconds")
        );
        assert!(err(json!({"url": "http://x", "expect_status": []})).contains("expect_status"));
        assert!(err(json!({"url": "http://x", "expect_status": [99]})).contains("99"));
        assert!(err(json!({"url": "http://x", "expect_status": [600]})).contains("600"));
        assert!(err(json!({"url": "http://x", "headers": {"bad name": "v"}})).contains("bad name"));
        assert!(err(json!({"url": "http://x", "headers": {"x": "a\nb"}})).contains("value of x"));
        assert!(err(json!({"url": "http://x", "headers": {"Host": "internal"}})).contains("host"));
        assert!(
            err(json!({"url": "http://x", "headers": {"Transfer-Encoding": "chunked"}}))
                .contains("transfer-encoding")
        );
    }

    #[test]
    fn numeric_ip_spellings_are_normalized_before_checking() {
        let p = input(json!({"url": "http://2130706433/"})).unwrap();
        assert_eq!(p.url.host(), Some(Host::Ipv4(Ipv4Addr::LOCALHOST)));
        let p = input(json!({"url": "http://0x7f.1/"})).unwrap();
        assert_eq!(p.url.host(), Some(Host::Ipv4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn schema_lists_fields_inline() {
        use super::super::Tool;
        let tool = HttpRequest::with_settings(HttpSettings::new::<&str>(&[], 1024));
        let schema = tool.input_schema();
        let props = schema["properties"].as_object().unwrap();
        for key in [
            "method",
            "url",
            "headers",
            "json",
            "body",
            "timeout_seconds",
            "expect_status",
        ] {
            assert!(props.contains_key(key), "{key} missing from {schema}");
        }
        assert_eq!(schema["required"], json!(["url"]));
        assert_eq!(props["method"]["type"], "string", "{schema}");
        assert_eq!(props["method"]["enum"][5], "HEAD");
        assert!(!schema.to_string().contains("$ref"), "{schema}");
        assert_eq!(tool.name(), "http.request");
    }

    #[test]
    fn json_content_types() {
        let with = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/problem+json"));
        assert!(!with("text/plain"));
        assert!(!with("text/json+html"));
        assert!(!is_json(&HeaderMap::new()));
    }

    // ----- against a local server -----------------------------------------------------------

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::extract::Query;
    use axum::http::{HeaderMap as AxumHeaders, Method as AxumMethod, StatusCode as AxumStatus};
    use axum::response::{IntoResponse, Response as AxumResponse};
    use axum::routing::{any, get};
    use std::collections::HashMap;

    const LIMIT: usize = 64 * 1024;

    async fn echo(method: AxumMethod, headers: AxumHeaders, body: String) -> impl IntoResponse {
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        axum::Json(json!({
            "method": method.as_str(),
            "user_agent": header("user-agent"),
            "content_type": header("content-type"),
            "authorization": header("authorization"),
            "x_test": header("x-test"),
            "body": body,
        }))
    }

    async fn redirect(Query(q): Query<HashMap<String, String>>) -> AxumResponse {
        let status = q.get("status").and_then(|s| s.parse().ok()).unwrap_or(302);
        (
            AxumStatus::from_u16(status).unwrap(),
            [("location", q.get("to").cloned().unwrap_or_default())],
        )
            .into_response()
    }

    /// Starts a server on 127.0.0.1:0 and returns its base URL.
    async fn server() -> String {
        let app = Router::new()
            .route(
                "/json",
                get(|| async { axum::Json(json!({"ok": true, "n": [1, 2]})) }),
            )
            .route("/text", get(|| async { "hello there" }))
            .route(
                "/bad-json",
                get(|| async { ([("content-type", "application/json")], "not json {") }),
            )
            .route("/echo", any(echo))
            .route(
                "/fail",
                get(|| async { (AxumStatus::INTERNAL_SERVER_ERROR, "boom: database down") }),
            )
            .route(
                "/missing",
                get(|| async { (AxumStatus::NOT_FOUND, "no such thing") }),
            )
            .route("/created", get(|| async { (AxumStatus::CREATED, "made") }))
            .route(
                "/busy",
                get(|| async { (AxumStatus::TOO_MANY_REQUESTS, "slow down") }),
            )
            .route("/redirect", any(redirect))
            .route(
                "/loop",
                get(|| async { (AxumStatus::FOUND, [("location", "/loop")]) }),
            )
            .route("/huge", get(|| async { "x".repeat(LIMIT + 1) }))
            .route(
                "/huge-stream",
                get(|| async {
                    let chunks =
                        (0..100).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 4096])));
                    Body::from_stream(futures_util::stream::iter(chunks))
                }),
            )
            .route("/exact", get(|| async { "z".repeat(LIMIT) }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "late"
                }),
            )
            .route(
                "/headers",
                get(|| async {
                    let headers = [("x-multi", "a"), ("x-multi", "b"), ("X-Upper", "v")];
                    (axum::response::AppendHeaders(headers), "ok")
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn settings(allowed: &[&str]) -> HttpSettings {
        HttpSettings::new(allowed, LIMIT)
    }

    fn get_input(url: String) -> Input {
        serde_json::from_value(json!({ "url": url })).unwrap()
    }

    async fn run(allowed: &[&str], input: Value) -> Result<Value, ToolError> {
        let input: Input = serde_json::from_value(input).unwrap();
        execute(&settings(allowed), input, Duration::from_secs(10)).await
    }

    #[tokio::test]
    async fn loopback_refused_without_allow_list() {
        let base = server().await;
        let e = execute(
            &settings(&[]),
            get_input(format!("{base}/json")),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(!e.retryable);
        assert!(
            e.message.contains("refused host 127.0.0.1"),
            "{}",
            e.message
        );
        assert!(e.message.contains("a loopback address"), "{}", e.message);
        assert!(
            e.message.contains("HTTP_TOOL_ALLOWED_HOSTS"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let base = server().await;
        let url = base.replace("127.0.0.1", "localhost");
        let e = run(&[], json!({"url": format!("{url}/json")}))
            .await
            .unwrap_err();
        assert!(!e.retryable);
        assert!(
            e.message
                .contains("refused host localhost: it resolves to 127.0.0.1, a loopback address"),
            "{}",
            e.message
        );
        // Listing the name allows it, and the pinned address is the one connected to.
        let out = run(&["localhost"], json!({"url": format!("{url}/json")}))
            .await
            .unwrap();
        assert_eq!(out["body"], json!({"ok": true, "n": [1, 2]}));
    }

    #[tokio::test]
    async fn metadata_and_other_literals_refused() {
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd00:ec2::254]/",
            "http://0.0.0.0/",
            "http://10.0.0.1/",
            "http://2130706433/",
        ] {
            let e = run(&["192.168.0.0/16"], json!({ "url": url }))
                .await
                .unwrap_err();
            assert!(!e.retryable, "{url}");
            assert!(e.message.contains("refused host"), "{url}: {}", e.message);
        }
    }

    #[tokio::test]
    async fn allowed_by_ip_or_cidr_parses_json_and_text() {
        let base = server().await;
        for allowed in ["127.0.0.1", "127.0.0.0/8"] {
            let out = run(&[allowed], json!({"url": format!("{base}/json")}))
                .await
                .unwrap();
            assert_eq!(out["status"], 200);
            assert_eq!(out["body"], json!({"ok": true, "n": [1, 2]}));
            assert_eq!(out["headers"]["content-type"], "application/json");
            assert!(out["elapsed_ms"].is_u64());
        }
        let out = run(&["127.0.0.1"], json!({"url": format!("{base}/text")}))
            .await
            .unwrap();
        assert_eq!(out["body"], "hello there");
        let out = run(&["127.0.0.1"], json!({"url": format!("{base}/bad-json")}))
            .await
            .unwrap();
        assert_eq!(out["body"], "not json {");
        let out = run(
            &["127.0.0.1"],
            json!({"method": "HEAD", "url": format!("{base}/text")}),
        )
        .await
        .unwrap();
        assert_eq!(out["status"], 200);
        assert_eq!(out["body"], "");
    }

    #[tokio::test]
    async fn sends_method_headers_body_and_user_agent() {
        let base = server().await;
        let out = run(
            &["127.0.0.1"],
            json!({"method": "POST", "url": format!("{base}/echo"), "json": {"a": [1]},
                   "headers": {"X-Test": "yes"}}),
        )
        .await
        .unwrap();
        let body = &out["body"];
        assert_eq!(body["method"], "POST");
        assert_eq!(body["user_agent"], USER_AGENT);
        assert!(USER_AGENT.starts_with("docket/"));
        assert_eq!(body["content_type"], "application/json");
        assert_eq!(body["x_test"], "yes");
        assert_eq!(body["body"], r#"{"a":[1]}"#);

        let out = run(
            &["127.0.0.1"],
            json!({"method": "PATCH", "url": format!("{base}/echo"), "body": "plain",
                   "headers": {"User-Agent": "custom/1"}}),
        )
        .await
        .unwrap();
        assert_eq!(out["body"]["method"], "PATCH");
        assert_eq!(out["body"]["body"], "plain");
        assert_eq!(out["body"]["user_agent"], "custom/1");
    }

    #[tokio::test]
    async fn response_headers_are_lower_case_and_joined() {
        let base = server().await;
        let out = run(&["127.0.0.1"], json!({"url": format!("{base}/headers")}))
            .await
            .unwrap();
        assert_eq!(out["headers"]["x-multi"], "a, b");
        assert_eq!(out["headers"]["x-upper"], "v");
    }

    #[tokio::test]
    async fn server_error_is_transient() {
        let base = server().await;
        let e = run(&["127.0.0.1"], json!({"url": format!("{base}/fail")}))
            .await
            .unwrap_err();
        assert!(e.retryable);
        assert!(e.message.contains("500"), "{}", e.message);
        assert!(e.message.contains("boom: database down"), "{}", e.message);
        let e = run(&["127.0.0.1"], json!({"url": format!("{base}/busy")}))
            .await
            .unwrap_err();
        assert!(e.retryable, "429 is worth retrying");
    }

    #[tokio::test]
    async fn client_error_is_permanent() {
        let base = server().await;
        let e = run(
            &["127.0.0.1"],
            json!({"url": format!("{base}/missing?token=secret")}),
        )
        .await
        .unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("404 Not Found"), "{}", e.message);
        assert!(e.message.contains("no such thing"), "{}", e.message);
        assert!(
            !e.message.contains("secret"),
            "query strings stay out of messages"
        );
    }

    #[tokio::test]
    async fn expect_status_decides_success() {
        let base = server().await;
        let out = run(
            &["127.0.0.1"],
            json!({"url": format!("{base}/missing"), "expect_status": [404]}),
        )
        .await
        .unwrap();
        assert_eq!(out["status"], 404);
        assert_eq!(out["body"], "no such thing");
        let e = run(
            &["127.0.0.1"],
            json!({"url": format!("{base}/created"), "expect_status": [200]}),
        )
        .await
        .unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("201"), "{}", e.message);
        // A listed 3xx is returned instead of followed.
        let out = run(
            &["127.0.0.1"],
            json!({"url": format!("{base}/redirect?to=/json"), "expect_status": [302]}),
        )
        .await
        .unwrap();
        assert_eq!(out["status"], 302);
        assert_eq!(out["headers"]["location"], "/json");
    }

    #[tokio::test]
    async fn redirect_followed_when_allowed() {
        let base = server().await;
        let out = run(
            &["127.0.0.1"],
            json!({"url": format!("{base}/redirect?to=/json")}),
        )
        .await
        .unwrap();
        assert_eq!(out["status"], 200);
        assert_eq!(out["body"]["ok"], true);

        // 303 turns a POST into a GET without a body; 307 repeats it.
        let out = run(
            &["127.0.0.1"],
            json!({"method": "POST", "url": format!("{base}/redirect?to=/echo&status=303"), "body": "x"}),
        )
        .await
        .unwrap();
        assert_eq!(out["body"]["method"], "GET");
        assert_eq!(out["body"]["body"], "");
        let out = run(
            &["127.0.0.1"],
            json!({"method": "POST", "url": format!("{base}/redirect?to=/echo&status=307"), "body": "x"}),
        )
        .await
        .unwrap();
        assert_eq!(out["body"]["method"], "POST");
        assert_eq!(out["body"]["body"], "x");
    }

    #[tokio::test]
    async fn redirect_to_refused_host_is_refused() {
        let base = server().await;
        let e = run(
            &["127.0.0.1"],
            json!({"url": format!("{base}/redirect?to=http://169.254.169.254/latest/meta-data/")}),
        )
        .await
        .unwrap_err();
        assert!(!e.retryable);
        assert!(
            e.message.contains("refused host 169.254.169.254"),
            "{}",
            e.message
        );
        assert!(e.message.contains("after 1 redirect"), "{}", e.message);

        // Allowed by name only: a redirect to the same server by address is checked afresh.
        let url = base.replace("127.0.0.1", "localhost");
        let e = run(
            &["localhost"],
            json!({"url": format!("{url}/redirect?to={base}/json")}),
        )
        .await
        .unwrap_err();
        assert!(
            e.message.contains("refused host 127.0.0.1"),
            "{}",
            e.message
        );

        let e = run(
            &["127.0.0.1"],
            json!({"url": format!("{base}/redirect?to=file:///etc/passwd")}),
        )
        .await
        .unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("scheme file"), "{}", e.message);
    }

    #[tokio::test]
    async fn cross_origin_redirect_drops_credentials() {
        let base = server().await;
        let other = base.replace("127.0.0.1", "localhost");
        let out = run(
            &["127.0.0.1", "localhost"],
            json!({"url": format!("{base}/redirect?to={other}/echo"),
                   "headers": {"Authorization": "Bearer t", "X-Test": "kept"}}),
        )
        .await
        .unwrap();
        assert_eq!(out["body"]["authorization"], "");
        assert_eq!(out["body"]["x_test"], "kept");
        let out = run(
            &["127.0.0.1"],
            json!({"url": format!("{base}/redirect?to=/echo"), "headers": {"Authorization": "Bearer t"}}),
        )
        .await
        .unwrap();
        assert_eq!(out["body"]["authorization"], "Bearer t");
    }

    #[tokio::test]
    async fn too_many_redirects_is_permanent() {
        let base = server().await;
        let e = run(&["127.0.0.1"], json!({"url": format!("{base}/loop")}))
            .await
            .unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("more than 5 redirects"), "{}", e.message);
    }

    #[tokio::test]
    async fn oversize_bodies_refused() {
        let base = server().await;
        for path in ["/huge", "/huge-stream"] {
            let e = run(&["127.0.0.1"], json!({"url": format!("{base}{path}")}))
                .await
                .unwrap_err();
            assert!(!e.retryable, "{path}");
            assert!(
                e.message.contains("HTTP_TOOL_MAX_RESPONSE_BYTES"),
                "{path}: {}",
                e.message
            );
        }
        let out = run(&["127.0.0.1"], json!({"url": format!("{base}/exact")}))
            .await
            .unwrap();
        assert_eq!(out["body"].as_str().unwrap().len(), LIMIT);
        // HEAD announces the size but sends nothing, so it is not refused.
        let out = run(
            &["127.0.0.1"],
            json!({"method": "HEAD", "url": format!("{base}/huge")}),
        )
        .await
        .unwrap();
        assert_eq!(out["headers"]["content-length"], (LIMIT + 1).to_string());
        assert_eq!(out["body"], "");
    }

    #[tokio::test]
    async fn timeout_is_transient_and_capped_by_step() {
        let base = server().await;
        let started = Instant::now();
        let input =
            serde_json::from_value(json!({"url": format!("{base}/slow"), "timeout_seconds": 60}))
                .unwrap();
        let e = execute(&settings(&["127.0.0.1"]), input, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.retryable);
        assert!(e.message.contains("timed out"), "{}", e.message);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn pinned_client_never_consults_dns_again() {
        let base = server().await;
        let port = Url::parse(&base).unwrap().port().unwrap();
        let live: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
        crate::tls::install_crypto_provider();
        // A name that cannot resolve reaches the pinned address.
        let url = Url::parse(&format!("http://pinned.invalid:{port}/json")).unwrap();
        let client = pinned_client(&url, &[live]).unwrap();
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // A name that resolves to the live server is not used when pinned elsewhere.
        let url = Url::parse(&format!("http://localhost:{port}/json")).unwrap();
        let elsewhere = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port);
        let client = pinned_client(&url, &[elsewhere]).unwrap();
        assert!(client.get(url).send().await.is_err());
    }

    #[tokio::test]
    async fn connection_refused_is_transient() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = run(&["127.0.0.1"], json!({"url": format!("http://{addr}/")}))
            .await
            .unwrap_err();
        assert!(e.retryable);
        assert!(e.message.contains("could not connect"), "{}", e.message);
    }
}
