//! Router assembly, middleware and the OpenAPI document.

mod docs;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod pagination;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{AppState, Role};
use crate::ops;
use error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Docket",
        description = "Scheduler, durable job queue, pipelines, review decisions and knowledge search."
    ),
    tags(
        (name = "health", description = "Probes and metrics"),
        (name = "auth", description = "Sign-in, sessions and MFA"),
        (name = "tenants", description = "Tenants (platform administration)"),
        (name = "users", description = "Users of a tenant"),
        (name = "api-keys", description = "API keys for agents and services"),
        (name = "audit", description = "The tamper-evident audit log"),
        (name = "tasks", description = "Scheduled work"),
        (name = "runs", description = "Execution history, workers and queues"),
        (name = "events", description = "Published events and the live event stream"),
        (name = "cases", description = "Items that need a decision, their history and attachments"),
        (name = "reviews", description = "The review queue: claiming, deciding, dual control, statistics"),
        (name = "policy", description = "The decision policy: versions, validation and simulation"),
        (name = "reports", description = "Decision counts and SLA compliance, as JSON or CSV"),
        (name = "knowledge", description = "Document collections, ingestion and search")
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// Declares the bearer scheme (JWT access token or `dk_` API key) that every API operation uses.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token from /auth/login, or an API key (dk_...).",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The full router for a process of the given role: the public API (for roles that serve it) plus
/// the health and metrics endpoints every role serves, wrapped in the common middleware.
pub fn router(state: AppState, role: Role) -> Router {
    let config = state.config.clone();
    let prefix = config.api_v1_prefix.clone();

    let mut ops_routes = OpenApiRouter::new()
        .routes(routes!(ops::health))
        .routes(routes!(ops::live))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics));
    // The configured path is an extra route to `/health`, unless it already is one of the probes.
    if !["/health", "/health/live", "/health/ready", "/metrics"]
        .contains(&config.healthcheck_path.as_str())
    {
        ops_routes = ops_routes.route(&config.healthcheck_path, get(ops::health));
    }

    let mut app = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(ops_routes);
    let mut console_api = None;
    if role.serves_api() {
        let v1 = OpenApiRouter::new()
            .routes(routes!(ops::api_health))
            .merge(crate::auth::routes())
            .merge(crate::audit::routes())
            .merge(crate::scheduler::routes())
            .merge(crate::runs::routes())
            .merge(crate::queue::routes())
            .merge(crate::events::routes())
            .merge(crate::cases::routes())
            .merge(crate::review::routes())
            .merge(crate::reports::routes())
            .merge(crate::policy::routes())
            .merge(crate::pipeline::routes())
            .merge(crate::knowledge::routes());
        let (v1_router, _) = v1.clone().split_for_parts();
        console_api = Some(crate::console::InternalApi {
            router: Router::new()
                .nest(&prefix, v1_router)
                .with_state(state.clone()),
            prefix: prefix.clone(),
        });
        app = app.nest(&prefix, v1);
    }
    let (router, mut openapi) = app.split_for_parts();
    document_common_errors(&mut openapi, &prefix);
    complete_responses(&mut openapi);

    let mut router = router;
    if let Some(api) = console_api {
        router = router.merge(crate::console::routes(state.clone(), api));
    }
    if role.serves_api() {
        let spec_path = format!("{prefix}/openapi.json");
        router = router
            .route(&spec_path, get(move || async move { axum::Json(openapi) }))
            .merge(docs::routes(&spec_path));
    }

    let router = router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state);
    middleware::apply(router, &config)
}

/// Adds the refusals that middleware and extractors give on any operation, which handlers do not
/// list one by one, so clients and contract tests know every status an operation may answer:
/// authentication, authorisation and rate limits (API operations under `prefix` that are not
/// public, `security(())`), bad parameters, refused JSON bodies, unknown ids in the path, and on
/// every operation a wrong method, a timeout and a server failure. A status an operation documents
/// itself is kept.
fn document_common_errors(openapi: &mut utoipa::openapi::OpenApi, prefix: &str) {
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};

    const SIGNED_IN: [(&str, &str); 3] = [
        ("401", "Missing, invalid or expired credentials"),
        ("403", "The role, scope or client address is not allowed"),
        ("429", "Rate limit exceeded; see `Retry-After`"),
    ];
    const INPUT: [(&str, &str); 2] = [
        ("400", "Malformed parameter or JSON body"),
        ("422", "Invalid value (`details` names the field)"),
    ];
    const BODY: [(&str, &str); 2] = [
        ("413", "Request body too large"),
        ("415", "Unsupported `Content-Type` for the body"),
    ];
    const RESOURCE: [(&str, &str); 1] = [("404", "No such resource (or not this tenant's)")];
    const ANY_OPERATION: [(&str, &str); 3] = [
        (
            "405",
            "The path does not take this method; `Allow` lists the ones it does",
        ),
        ("408", "The request took longer than the request timeout"),
        (
            "500",
            "The server failed; the cause is logged under the response's `X-Request-Id`",
        ),
    ];

    for (path, item) in openapi.paths.paths.iter_mut() {
        let in_api = path.starts_with(prefix);
        let names_a_resource = path.contains('{');
        for operation in operations_of(item) {
            let public = operation
                .security
                .as_ref()
                .is_some_and(|any_of| any_of.contains(&SecurityRequirement::default()));
            let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let has_body = operation.request_body.is_some();
            let groups: [(bool, &[(&str, &str)]); 5] = [
                (true, &ANY_OPERATION),
                (in_api && !public, &SIGNED_IN),
                (has_parameters || has_body, &INPUT),
                (has_body, &BODY),
                (names_a_resource, &RESOURCE),
            ];
            let statuses = groups
                .into_iter()
                .filter(|(applies, _)| *applies)
                .flat_map(|(_, statuses)| statuses.iter());
            for (status, description) in statuses {
                operation
                    .responses
                    .responses
                    .entry((*status).to_owned())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(*description)
                                .content(
                                    "application/json",
                                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                                )
                                .build(),
                        )
                    });
            }
        }
    }
}

/// What OpenAPI 3.1 requires and client generators rely on beyond what the handlers state: a
/// `servers` entry (the paths carry the API prefix, so it is the root), the components of JSON
/// fields with a shape of their own, `Retry-After` on every 429, and a description on every
/// response (the status's own where a handler gives none).
fn complete_responses(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::server::Server;

    openapi.servers = Some(vec![Server::new("/")]);
    openapi
        .components
        .get_or_insert_with(Default::default)
        .schemas
        .extend(
            crate::pipeline::definition::openapi_components()
                .into_iter()
                .chain(docket_rules::policy::schema::openapi_components()),
        );
    reference_page_items(openapi);
    for item in openapi.paths.paths.values_mut() {
        for operation in operations_of(item) {
            for (status, response) in operation.responses.responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                if response.description.is_empty() {
                    response.description = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
                        .and_then(|code| code.canonical_reason())
                        .unwrap_or("Response")
                        .to_owned();
                }
                if status == "429" {
                    response
                        .headers
                        .entry("Retry-After".to_owned())
                        .or_insert_with(|| {
                            RefOr::T(
                                HeaderBuilder::new()
                                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                                    .description(Some("Seconds to wait before trying again"))
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

/// Every operation of a path (the methods Docket routes).
fn operations_of(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// utoipa writes the item schema of `Page<T>` out in full in every `Page_T`
/// (juhaku/utoipa#1586); generators then make a second, anonymous model of each item type.
/// Where `T` is a component of its own, the items refer to it instead.
fn reference_page_items(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{ArrayItems, Schema};
    use utoipa::openapi::{Ref, RefOr};

    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    let named: Vec<String> = components.schemas.keys().cloned().collect();
    for (name, schema) in components.schemas.iter_mut() {
        let Some(item) = name.strip_prefix("Page_") else {
            continue;
        };
        if !named.iter().any(|n| n == item) {
            continue;
        }
        if let RefOr::T(Schema::Object(page)) = schema
            && let Some(RefOr::T(Schema::Array(items))) = page.properties.get_mut("items")
        {
            items.items =
                ArrayItems::RefOrSchema(Box::new(RefOr::Ref(Ref::from_schema_name(item))));
        }
    }
}

async fn not_found() -> impl IntoResponse {
    ApiError::not_found("No route matches this path.")
}
