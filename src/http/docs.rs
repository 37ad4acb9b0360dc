//! The API docs pages: Swagger UI at `/docs` and ReDoc at `/redoc`, both served from the binary
//! (vendored from their npm packages, see `vendor/README.md`) so they work without internet access.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;

pub const SWAGGER_UI_VERSION: &str = "5.36.0";
pub const REDOC_VERSION: &str = "2.5.4";

const SWAGGER_UI_JS: &[u8] = include_bytes!("../../vendor/swagger-ui-dist/swagger-ui-bundle.js");
const SWAGGER_UI_CSS: &[u8] = include_bytes!("../../vendor/swagger-ui-dist/swagger-ui.css");
const REDOC_JS: &[u8] = include_bytes!("../../vendor/redoc/redoc.standalone.js");
/// Starts Swagger UI; a file of its own because the pages allow no inline script.
const SWAGGER_INIT_JS: &str = include_str!("docs_init.js");

/// Only Docket's own origin. The viewers set inline styles (ReDoc injects its stylesheets) and
/// ReDoc searches in a worker it creates from a blob, hence those two allowances. ReDoc's sidebar
/// shows its maker's logo from their CDN: refused here, and ReDoc then leaves it out.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; \
                        connect-src 'self'; frame-ancestors 'none'";

/// The asset URLs carry the package version, so a browser may keep them for a year.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn swagger_asset(file: &str) -> String {
    format!("/docs/assets/swagger-ui-{SWAGGER_UI_VERSION}/{file}")
}

fn redoc_asset(file: &str) -> String {
    format!("/redoc/assets/redoc-{REDOC_VERSION}/{file}")
}

/// `/docs`, `/redoc` and their assets, for the OpenAPI document at `spec_path`.
pub fn routes(spec_path: &str) -> Router<AppState> {
    let swagger = Page(swagger_ui_page(spec_path));
    let redoc = Page(redoc_page(spec_path));
    Router::new()
        .route("/docs", get(move || async move { swagger.clone() }))
        .route("/redoc", get(move || async move { redoc.clone() }))
        .route(
            &swagger_asset("swagger-ui-bundle.js"),
            get(|| async { asset("text/javascript; charset=utf-8", SWAGGER_UI_JS) }),
        )
        .route(
            &swagger_asset("swagger-ui.css"),
            get(|| async { asset("text/css; charset=utf-8", SWAGGER_UI_CSS) }),
        )
        .route(
            &swagger_asset("docket-init.js"),
            get(|| async { asset("text/javascript; charset=utf-8", SWAGGER_INIT_JS.as_bytes()) }),
        )
        .route(
            &redoc_asset("redoc.standalone.js"),
            get(|| async { asset("text/javascript; charset=utf-8", REDOC_JS) }),
        )
}

/// A docs page, under the docs pages' CSP.
#[derive(Clone)]
struct Page(String);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        ([(header::CONTENT_SECURITY_POLICY, DOCS_CSP)], Html(self.0)).into_response()
    }
}

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
        ],
        body,
    )
        .into_response()
}

fn swagger_ui_page(spec_path: &str) -> String {
    let css = swagger_asset("swagger-ui.css");
    let bundle = swagger_asset("swagger-ui-bundle.js");
    let init = swagger_asset("docket-init.js");
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Docket API</title>
<link rel="stylesheet" href="{css}">
</head>
<body>
<div id="swagger-ui" data-spec-url="{spec_path}"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"#
    )
}

fn redoc_page(spec_path: &str) -> String {
    let bundle = redoc_asset("redoc.standalone.js");
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Docket API reference</title>
</head>
<body>
<redoc spec-url="{spec_path}"></redoc>
<script src="{bundle}"></script>
</body>
</html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_load_nothing_from_elsewhere() {
        for html in [
            swagger_ui_page("/api/v1/openapi.json"),
            redoc_page("/api/v1/openapi.json"),
        ] {
            assert!(!html.contains("http"), "{html}");
            assert!(!html.contains("<script>"), "no inline script: {html}");
        }
        assert!(!DOCS_CSP.contains("http"));
    }
}
