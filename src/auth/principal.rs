//! Who is calling and what they may do. Authentication (bearer JWT or API key), tenant rate limits,
//! MFA enforcement, the admin IP allow-list and the role/scope check all happen in the
//! [`Authorized`] extractor, so handlers state their requirement in their signature and nothing else.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use super::{AuthError, Role, api_keys, sessions, tenants, tokens};
use crate::app::AppState;
use crate::audit::{Actor, Origin};
use crate::http::middleware::REQUEST_ID_HEADER;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: String,
    pub actor: Actor,
    /// A user's role; `None` for API keys.
    pub role: Option<Role>,
    pub platform_admin: bool,
    /// An API key's scopes; empty for users.
    pub scopes: Vec<String>,
    /// The user who created the API key; `None` for users and the system.
    pub key_creator: Option<String>,
    /// The login session behind a user's access token.
    pub session_id: Option<String>,
    /// False for an admin who has not enrolled in MFA yet: such a session may only enrol.
    pub mfa_satisfied: bool,
    pub origin: Origin,
    pub client_ip: Option<IpAddr>,
}

impl Principal {
    /// Appends an audit record of this caller's action inside `tx`.
    pub async fn audit(
        &self,
        tx: &mut crate::store::Tx,
        action: &str,
        target_type: &str,
        target_id: &str,
        summary: serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        let event = crate::audit::Event {
            tenant_id: &self.tenant_id,
            actor: &self.actor,
            action,
            target_type,
            target_id,
            summary,
            origin: &self.origin,
        };
        crate::audit::append(tx, event).await.map(|_| ())
    }

    /// Docket itself acting in a tenant (pipelines, benchmarks): no role, all checks done by the caller.
    pub fn system(tenant_id: &str) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            actor: Actor::System,
            role: None,
            platform_admin: false,
            scopes: Vec::new(),
            key_creator: None,
            session_id: None,
            mfa_satisfied: true,
            origin: Origin::default(),
            client_ip: None,
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        match &self.actor {
            Actor::User(id) => Some(id),
            _ => None,
        }
    }

    /// The person who answers for this call: the user, or the creator of the API key. The
    /// own-case rules compare this, so a person cannot decide what they submitted through a key.
    pub fn accountable_user(&self) -> Option<&str> {
        self.user_id().or(self.key_creator.as_deref())
    }
}

/// A requirement an endpoint places on its caller. Implemented by the zero-sized types below; the
/// OpenAPI description of each operation names the one it uses.
pub trait Permission: Send + Sync + 'static {
    /// Lowest user role allowed; `None` means any signed-in user.
    const MIN_ROLE: Option<Role>;
    /// Scope an API key needs; `None` means API keys may not call the endpoint at all.
    const SCOPE: Option<&'static str>;
    /// Only platform admins.
    const PLATFORM_ADMIN: bool = false;
    /// Subject to the tenant's IP allow-list (admin operations).
    const ADMIN_OPERATION: bool = false;
    /// Usable by an admin who has not enrolled in MFA yet (the enrolment endpoints themselves).
    const DURING_MFA_ENROLMENT: bool = false;
}

macro_rules! permission {
    ($(#[$doc:meta])* $name:ident { $($item:tt)* }) => {
        $(#[$doc])*
        pub struct $name;
        impl Permission for $name { $($item)* }
    };
}

permission!(
    /// Any signed-in user, about their own account.
    SignedIn { const MIN_ROLE: Option<Role> = None; const SCOPE: Option<&'static str> = None; }
);
permission!(
    /// MFA enrolment: any signed-in user, also before an admin has MFA.
    MfaEnrolment {
        const MIN_ROLE: Option<Role> = None;
        const SCOPE: Option<&'static str> = None;
        const DURING_MFA_ENROLMENT: bool = true;
    }
);
permission!(
    /// Platform administration (tenants).
    PlatformAdmin {
        const MIN_ROLE: Option<Role> = Some(Role::Admin);
        const SCOPE: Option<&'static str> = None;
        const PLATFORM_ADMIN: bool = true;
        const ADMIN_OPERATION: bool = true;
    }
);
permission!(
    /// Reading the tenant's users.
    ReadUsers { const MIN_ROLE: Option<Role> = Some(Role::Supervisor); const SCOPE: Option<&'static str> = Some("users:read"); }
);
permission!(
    /// Managing the tenant's users and API keys.
    TenantAdmin {
        const MIN_ROLE: Option<Role> = Some(Role::Admin);
        const SCOPE: Option<&'static str> = None;
        const ADMIN_OPERATION: bool = true;
    }
);
permission!(
    /// Reading tasks and runs.
    ReadTasks { const MIN_ROLE: Option<Role> = Some(Role::Viewer); const SCOPE: Option<&'static str> = Some("tasks:read"); }
);
permission!(
    /// Creating, changing and triggering tasks.
    WriteTasks { const MIN_ROLE: Option<Role> = Some(Role::Supervisor); const SCOPE: Option<&'static str> = Some("tasks:write"); }
);
permission!(
    /// Reading runs (execution history).
    ReadRuns { const MIN_ROLE: Option<Role> = Some(Role::Viewer); const SCOPE: Option<&'static str> = Some("runs:read"); }
);
permission!(
    /// Operating views: live workers and queue depth.
    ReadOperations { const MIN_ROLE: Option<Role> = Some(Role::Supervisor); const SCOPE: Option<&'static str> = Some("tasks:read"); }
);
permission!(
    /// Publishing events (which may trigger tasks).
    PublishEvents { const MIN_ROLE: Option<Role> = Some(Role::Supervisor); const SCOPE: Option<&'static str> = Some("events:write"); }
);
permission!(
    /// Reading and exporting the audit log.
    ReadAudit { const MIN_ROLE: Option<Role> = Some(Role::Supervisor); const SCOPE: Option<&'static str> = Some("audit:read"); }
);
permission!(
    /// Reading cases, their history and attachments.
    ReadCases { const MIN_ROLE: Option<Role> = Some(Role::Viewer); const SCOPE: Option<&'static str> = Some("cases:read"); }
);
permission!(
    /// Submitting cases and attaching files (people and agents).
    WriteCases { const MIN_ROLE: Option<Role> = Some(Role::Reviewer); const SCOPE: Option<&'static str> = Some("cases:write"); }
);
permission!(
    /// Claiming, releasing and deciding cases: people only, never API keys.
    ReviewCases { const MIN_ROLE: Option<Role> = Some(Role::Reviewer); const SCOPE: Option<&'static str> = None; }
);
permission!(
    /// Review queue statistics.
    ReadReviewStats { const MIN_ROLE: Option<Role> = Some(Role::Supervisor); const SCOPE: Option<&'static str> = Some("cases:read"); }
);
permission!(
    /// Decision and SLA reports.
    ReadReports { const MIN_ROLE: Option<Role> = Some(Role::Supervisor); const SCOPE: Option<&'static str> = Some("reports:read"); }
);
permission!(
    /// Reading, changing and simulating the decision policy.
    ManagePolicy {
        const MIN_ROLE: Option<Role> = Some(Role::Admin);
        const SCOPE: Option<&'static str> = None;
        const ADMIN_OPERATION: bool = true;
    }
);
permission!(
    /// Reading and searching knowledge collections.
    ReadKnowledge { const MIN_ROLE: Option<Role> = Some(Role::Viewer); const SCOPE: Option<&'static str> = Some("knowledge:read"); }
);
permission!(
    /// Creating collections and adding or removing documents.
    WriteKnowledge { const MIN_ROLE: Option<Role> = Some(Role::Supervisor); const SCOPE: Option<&'static str> = Some("knowledge:write"); }
);

/// Marks a request the web console makes to the API in-process while rendering one page. The page
/// counts once against the tenant's rate limit, not once per API call it needs. Request extensions
/// are set only by the server, so a client cannot claim this.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleCall;

/// Extracts the caller and enforces `P`. Rejections are 401 (who are you?) or 403 (not allowed).
pub struct Authorized<P: Permission>(pub Principal, pub PhantomData<P>);

impl<P: Permission> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = AuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = authenticate(parts, state).await?;
        authorize::<P>(&principal, state).await?;
        Ok(Self(principal, PhantomData))
    }
}

/// Marks a background refresh of a console page (console.js sends `X-Docket-Live: 1`). Those count
/// against the user's separate live budget, so that open live pages cannot starve the desk.
pub const LIVE_HEADER: &str = "x-docket-live";

pub fn is_live(parts: &Parts) -> bool {
    parts
        .headers
        .get(LIVE_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// Counts one request of `actor`: against its own budget (each user and each API key has one;
/// a user's live refreshes another), then against its tenant's much larger outer bound.
pub async fn count_request(
    state: &AppState,
    tenant_id: &str,
    actor: &Actor,
    live: bool,
) -> Result<(), AuthError> {
    let config = &state.config;
    let own = match actor {
        Actor::ApiKey(id) => Some((format!("key:{id}"), config.api_key_rate_limit_per_minute)),
        Actor::User(id) if live => Some((format!("live:{id}"), config.live_rate_limit_per_minute)),
        Actor::User(id) => Some((format!("user:{id}"), config.rate_limit_per_minute)),
        _ => None,
    };
    if let Some((key, limit)) = own {
        state.rate_limiter.check(&key, limit).await?;
    }
    state
        .rate_limiter
        .check(
            &format!("tenant:{tenant_id}"),
            config.tenant_rate_limit_per_minute,
        )
        .await
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, AuthError> {
    let origin = client_origin(parts, state);
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::MissingCredentials)?;
    // Rejected credentials are counted per address and refused once too many, before anything
    // else is looked up: guessing tokens or keys stays cheap to turn away.
    let failure_key = origin.ip.as_ref().map(|ip| format!("auth-ip:{ip}"));
    if let Some(key) = &failure_key
        && let Some(retry_after_seconds) = state
            .rate_limiter
            .failures_exceeded(key, state.config.auth_failures_per_ip)
            .await?
    {
        return Err(AuthError::CredentialsThrottled {
            retry_after_seconds,
        });
    }
    let principal = match identify(header, origin, state).await {
        Ok(principal) => principal,
        Err(e) => {
            if let Some(key) = &failure_key
                && matches!(e, AuthError::InvalidToken(_) | AuthError::SessionEnded)
            {
                state
                    .rate_limiter
                    .record_failure(key, AUTH_FAILURE_WINDOW_SECONDS)
                    .await?;
            }
            return Err(e);
        }
    };
    if parts.extensions.get::<ConsoleCall>().is_some() {
        // The console page that made this call was counted once already.
        return Ok(principal);
    }
    count_request(
        state,
        &principal.tenant_id,
        &principal.actor,
        is_live(parts),
    )
    .await?;
    Ok(principal)
}

/// The window of `AUTH_FAILURES_PER_IP`.
const AUTH_FAILURE_WINDOW_SECONDS: u64 = 15 * 60;

/// The caller behind an `Authorization` header: an API key or a signed-in session.
async fn identify(
    header: &header::HeaderValue,
    origin: Origin,
    state: &AppState,
) -> Result<Principal, AuthError> {
    let client_ip = origin.ip.as_deref().and_then(|ip| ip.parse().ok());
    let token = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::InvalidToken(
            "expected `Authorization: Bearer <token>`",
        ))?;

    let principal = if token.starts_with(api_keys::KEY_PREFIX) {
        let key = api_keys::authenticate(&state.store, token).await?;
        Principal {
            tenant_id: key.tenant_id,
            actor: Actor::ApiKey(key.id.clone()),
            role: None,
            platform_admin: false,
            scopes: key.scopes,
            key_creator: Some(key.created_by),
            session_id: None,
            mfa_satisfied: true,
            origin,
            client_ip,
        }
    } else {
        let claims = tokens::decode_access(&state.secret_key, token)?;
        let session = sessions::touch(state, &claims.tid, &claims.sub, &claims.sid).await?;
        Principal {
            tenant_id: claims.tid,
            actor: Actor::User(claims.sub),
            role: Some(session.role),
            platform_admin: session.platform_admin,
            scopes: Vec::new(),
            key_creator: None,
            session_id: Some(claims.sid),
            mfa_satisfied: session.mfa_satisfied,
            origin,
            client_ip,
        }
    };
    Ok(principal)
}

/// Whether `principal` holds `P` by role or scope. For filtering what a caller already allowed in
/// may see (say, which events of a stream); endpoints use [`Authorized`], which also applies the
/// network rules of admin operations.
pub fn holds<P: Permission>(principal: &Principal) -> bool {
    match principal.role {
        Some(role) => {
            (principal.mfa_satisfied || P::DURING_MFA_ENROLMENT)
                && (!P::PLATFORM_ADMIN || principal.platform_admin)
                && (principal.platform_admin || P::MIN_ROLE.is_none_or(|min| role >= min))
        }
        None => P::SCOPE.is_some_and(|scope| principal.scopes.iter().any(|s| s == scope)),
    }
}

/// `principal` as its session or API key stands now (role and scopes included), or why it may no
/// longer act: for long-lived responses that must end with the session or key behind them.
pub async fn recheck(state: &AppState, principal: &Principal) -> Result<Principal, AuthError> {
    let mut now = principal.clone();
    match (&principal.actor, &principal.session_id) {
        (Actor::User(user_id), Some(session_id)) => {
            let session =
                sessions::current(state, &principal.tenant_id, user_id, session_id).await?;
            now.role = Some(session.role);
            now.platform_admin = session.platform_admin;
            now.mfa_satisfied = session.mfa_satisfied;
        }
        (Actor::ApiKey(key_id), _) => {
            let key = api_keys::current(&state.store, &principal.tenant_id, key_id).await?;
            now.scopes = key.scopes;
        }
        _ => return Err(AuthError::SessionEnded),
    }
    Ok(now)
}

async fn authorize<P: Permission>(
    principal: &Principal,
    state: &AppState,
) -> Result<(), AuthError> {
    match principal.role {
        Some(role) => {
            if !principal.mfa_satisfied && !P::DURING_MFA_ENROLMENT {
                return Err(AuthError::MfaEnrolmentRequired);
            }
            if P::PLATFORM_ADMIN && !principal.platform_admin {
                return Err(AuthError::Forbidden(
                    "only platform administrators may do this",
                ));
            }
            if let Some(min) = P::MIN_ROLE
                && !principal.platform_admin
                && role < min
            {
                return Err(AuthError::Forbidden("your role does not allow this"));
            }
        }
        None => match P::SCOPE {
            Some(scope) if principal.scopes.iter().any(|s| s == scope) => {}
            Some(_) => {
                return Err(AuthError::Forbidden(
                    "this API key lacks the required scope",
                ));
            }
            None => return Err(AuthError::Forbidden("API keys cannot use this endpoint")),
        },
    }
    if P::ADMIN_OPERATION {
        let allowed = tenants::ip_allowlist(&state.store, &principal.tenant_id).await?;
        let permitted = allowed.is_empty()
            || principal
                .client_ip
                .is_some_and(|ip| allowed.iter().any(|net| net.contains(&ip)));
        if !permitted {
            return Err(AuthError::Forbidden(
                "admin operations are not allowed from this network",
            ));
        }
    }
    Ok(())
}

/// Request ID and client address. `X-Forwarded-For` is believed only when the peer is a trusted
/// proxy; then the right-most address that is not itself a trusted proxy is the client.
pub fn client_origin(parts: &Parts, state: &AppState) -> Origin {
    let request_id = parts
        .headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let trusted = |ip: &IpAddr| {
        state
            .config
            .trusted_proxies
            .iter()
            .any(|net| net.contains(ip))
    };
    let ip = match peer {
        Some(peer) if trusted(&peer) => {
            let forwarded: Vec<IpAddr> = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            Some(
                forwarded
                    .into_iter()
                    .rev()
                    .find(|ip| !trusted(ip))
                    .unwrap_or(peer),
            )
        }
        other => other,
    };
    Origin {
        request_id,
        ip: ip.map(|ip| ip.to_string()),
    }
}

/// The origin of an unauthenticated request (login, refresh), for throttling and the audit log.
pub struct ClientOrigin(pub Origin);

impl FromRequestParts<AppState> for ClientOrigin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(client_origin(parts, state)))
    }
}
