//! `/console/tenants`: for platform admins, every tenant; create one and give it its first admin,
//! so a tenant is onboarded without a shell on the database. A refused form is shown again with
//! what was typed (never the password) and the API's reason.

use axum::Form;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{error_box, pager, segment, with_status};
use crate::console::client::ApiFailure;
use crate::console::layout::{self, badge, csrf_input, time};
use crate::console::session::{self, Console};

pub const PATH: &str = "/console/tenants";
pub const ADMINS_PATH: &str = "/console/tenants/admins";

#[derive(Deserialize)]
struct TenantPage {
    items: Vec<Tenant>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Tenant {
    id: String,
    slug: String,
    name: String,
    status: String,
    created_at: DateTime<Utc>,
}

#[derive(Deserialize)]
pub struct PageQuery {
    cursor: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct TenantForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
pub struct AdminForm {
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

/// What the page shows in its forms: empty, or a refused form with the reason.
#[derive(Default)]
struct Typed<'a> {
    tenant: Option<(&'a TenantForm, &'a str)>,
    admin: Option<(&'a AdminForm, &'a str)>,
}

pub async fn page(console: Console, Query(params): Query<PageQuery>) -> Response {
    render(
        &console,
        params.cursor.as_deref().unwrap_or_default(),
        &Typed::default(),
    )
    .await
}

async fn render(console: &Console, cursor: &str, typed: &Typed<'_>) -> Response {
    let path = format!(
        "/tenants{}",
        super::query(&[("limit", "100"), ("cursor", cursor)])
    );
    let tenants: TenantPage = match console.api.get(&path).await {
        Ok(tenants) => tenants,
        Err(failure) => return console.fail(&failure),
    };
    let content = html! {
        h1 { "Tenants" }
        table #tenants {
            caption.visually-hidden { "Tenants of this installation" }
            thead {
                tr {
                    th scope="col" { "Slug" }
                    th scope="col" { "Name" }
                    th scope="col" { "Status" }
                    th scope="col" { "Created" }
                }
            }
            tbody {
                @for tenant in &tenants.items {
                    tr data-tenant-id=(tenant.id) {
                        td { code { (tenant.slug) } }
                        td { (tenant.name) }
                        td { (badge(&tenant.status)) }
                        td { (time(&tenant.created_at)) }
                    }
                }
            }
        }
        (pager(PATH, &[], tenants.next_cursor.as_deref(), !cursor.is_empty()))
        (tenant_form(&console.csrf, typed.tenant))
        (admin_form(&console.csrf, &tenants.items, typed.admin))
    };
    layout::page(console, "Tenants", PATH, content)
}

fn tenant_form(csrf: &str, typed: Option<(&TenantForm, &str)>) -> Markup {
    let empty = TenantForm::default();
    let (form, error) = typed.map_or((&empty, None), |(form, error)| (form, Some(error)));
    html! {
        section aria-labelledby="new-tenant-heading" {
            h2 #new-tenant-heading { "New tenant" }
            @if let Some(error) = error { (error_box(error)) }
            form #new-tenant .stack method="post" action=(PATH) {
                (csrf_input(csrf))
                div {
                    label for="tenant-slug" {
                        "Slug"
                        span.hint { "Lower-case letters, digits and dashes; people type it to sign in." }
                    }
                    input #tenant-slug type="text" name="slug" required maxlength="63"
                        autocomplete="off" value=(form.slug);
                }
                div {
                    label for="tenant-name" { "Name" }
                    input #tenant-name type="text" name="name" required maxlength="200"
                        autocomplete="off" value=(form.name);
                }
                div { button #create-tenant type="submit" { "Create tenant" } }
            }
        }
    }
}

fn admin_form(csrf: &str, tenants: &[Tenant], typed: Option<(&AdminForm, &str)>) -> Markup {
    let empty = AdminForm::default();
    let (form, error) = typed.map_or((&empty, None), |(form, error)| (form, Some(error)));
    html! {
        section aria-labelledby="new-tenant-admin-heading" {
            h2 #new-tenant-admin-heading { "Admin of a tenant" }
            p { "Give a tenant its first admin (or another one). They set up two-factor authentication at their first sign-in." }
            @if let Some(error) = error { (error_box(error)) }
            form #new-tenant-admin .stack method="post" action=(ADMINS_PATH) {
                (csrf_input(csrf))
                div {
                    label for="admin-tenant" { "Tenant" }
                    select #admin-tenant name="tenant_id" required {
                        @for tenant in tenants {
                            option value=(tenant.id) selected[tenant.id == form.tenant_id] {
                                (tenant.name) " (" (tenant.slug) ")"
                            }
                        }
                    }
                }
                div {
                    label for="admin-email" { "Email" }
                    input #admin-email type="email" name="email" required autocomplete="off"
                        value=(form.email);
                }
                div {
                    label for="admin-name" { "Name" }
                    input #admin-name type="text" name="name" required maxlength="200"
                        autocomplete="off" value=(form.name);
                }
                div {
                    label for="admin-password" {
                        "Initial password"
                        span.hint { "At least 12 characters. Give it to the admin by a safe channel." }
                    }
                    input #admin-password type="password" name="password" required minlength="12"
                        autocomplete="new-password";
                }
                div { button #create-tenant-admin type="submit" { "Create admin" } }
            }
        }
    }
}

/// A refused form: the page again, with what was typed and the reason, under the API's status.
async fn refused(console: &Console, failure: &ApiFailure, typed: &Typed<'_>) -> Response {
    if failure.needs_sign_in() || !failure.status.is_client_error() {
        return console.fail(failure);
    }
    let status = match failure.status {
        StatusCode::CONFLICT => StatusCode::CONFLICT,
        StatusCode::FORBIDDEN => StatusCode::FORBIDDEN,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    with_status(render(console, "", typed).await, status)
}

pub async fn create_tenant(console: Console, Form(form): Form<TenantForm>) -> Response {
    let body = json!({ "slug": form.slug.trim(), "name": form.name.trim() });
    match console.api.post::<Tenant>("/tenants", &body).await {
        Ok(tenant) => session::success(
            PATH,
            format!("Tenant {} created. Now give it an admin.", tenant.slug),
        ),
        Err(failure) => {
            let typed = Typed {
                tenant: Some((&form, &failure.message)),
                admin: None,
            };
            refused(&console, &failure, &typed).await
        }
    }
}

pub async fn create_admin(console: Console, Form(form): Form<AdminForm>) -> Response {
    let body = json!({
        "email": form.email.trim(),
        "name": form.name.trim(),
        "password": form.password,
    });
    let path = format!("/tenants/{}/admins", segment(form.tenant_id.trim()));
    match console.api.post::<Value>(&path, &body).await {
        Ok(_) => session::success(
            PATH,
            format!(
                "Admin {} created; they set up two-factor authentication at their first sign-in.",
                form.email.trim()
            ),
        ),
        Err(failure) => {
            let typed = Typed {
                tenant: None,
                admin: Some((&form, &failure.message)),
            };
            refused(&console, &failure, &typed).await
        }
    }
}
