//! The web console over HTTP, without a browser: sign-in, cookies, CSRF, session refresh and
//! sign-out, the security headers, role checks, and one real flow per area driven through its forms
//! by a client that keeps cookies the way a browser does.

use std::collections::BTreeMap;

use axum_extra::extract::cookie::{Cookie, SameSite};
use docket::auth::Role;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{PASSWORD, TestApp, totp_code};

#[path = "../console/html.rs"]
mod html;
#[path = "../console/seed.rs"]
mod seed;

const CSRF: &str = "docket_csrf";
const ACCESS: &str = "docket_access";
const REFRESH: &str = "docket_refresh";

/// A response as the test browser saw it.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    set_cookies: Vec<Cookie<'static>>,
}

impl Reply {
    fn location(&self) -> Option<&str> {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok())
    }

    fn cookie(&self, name: &str) -> Option<&Cookie<'static>> {
        self.set_cookies.iter().find(|c| c.name() == name)
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn text_of(&self, id: &str) -> String {
        html::text_of(&self.body, id)
            .unwrap_or_else(|| panic!("no #{id} on the page:\n{}", self.body))
    }

    fn has(&self, id: &str) -> bool {
        html::by_id(&self.body, id).is_some()
    }

    fn form(&self, id: &str) -> html::Form {
        html::form_with(&self.body, id)
            .unwrap_or_else(|| panic!("no form with #{id} on the page:\n{}", self.body))
    }

    /// The flash message shown on the page, if any.
    fn flash(&self) -> Option<String> {
        html::select(&self.body, |t| t.has_class("flash"))
            .first()
            .map(|t| html::text(html::inner_html(&self.body, t)))
    }

    /// The page keeps to the console's rules: no inline code (the CSP would block it) and
    /// labelled fields, scoped table headers, headings in order.
    fn assert_well_formed(&self, what: &str) {
        let inline = html::inline_code(&self.body);
        assert!(
            inline.is_empty(),
            "{what}: inline code the CSP blocks: {inline:?}"
        );
        let a11y = html::accessibility_problems(&self.body);
        assert!(a11y.is_empty(), "{what}: accessibility problems: {a11y:?}");
    }
}

/// A cookie-keeping client that does not follow redirects, so each step can be checked.
struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
    /// The last page fetched, sent as the referrer of form posts as browsers do.
    current: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        docket::tls::install_crypto_provider();
        Self {
            app,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: BTreeMap::new(),
            current: None,
        }
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    fn csrf(&self) -> String {
        self.cookie(CSRF).expect("a CSRF cookie").to_owned()
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Reply {
        let cookie_header = self.cookie_header();
        let request = if cookie_header.is_empty() {
            request
        } else {
            request.header("cookie", cookie_header)
        };
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let set_cookies: Vec<Cookie<'static>> = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| Cookie::parse(v.to_str().expect("ASCII cookie").to_owned()).expect("cookie"))
            .collect();
        for cookie in &set_cookies {
            assert_eq!(
                cookie.path(),
                Some("/console"),
                "console cookies stay under /console"
            );
            let removed = cookie.max_age().is_some_and(|age| age.is_zero());
            if removed {
                self.cookies.remove(cookie.name());
            } else {
                self.cookies
                    .insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
        Reply {
            status,
            headers,
            body: response.text().await.expect("body"),
            set_cookies,
        }
    }

    async fn get(&mut self, path: &str) -> Reply {
        let request = self.client.get(self.app.url(path));
        let reply = self.send(request).await;
        if reply.status == StatusCode::OK {
            self.current = Some(self.app.url(path));
        }
        reply
    }

    /// Posts form fields exactly as given (no CSRF token added).
    async fn post(&mut self, path: &str, fields: &[(String, String)]) -> Reply {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut request = self
            .client
            .post(self.app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(referer) = &self.current {
            request = request.header("referer", referer);
        }
        self.send(request).await
    }

    /// Submits a form read from a page (which carries its CSRF field).
    async fn submit(&mut self, form: &html::Form) -> Reply {
        assert_eq!(form.method, "post", "console forms post: {form:?}");
        assert!(
            form.get("_csrf").is_some(),
            "every console form carries the CSRF token: {form:?}"
        );
        self.post(&form.action, &form.fields).await
    }

    /// Follows redirects (GET) until a page.
    async fn follow(&mut self, mut reply: Reply) -> Reply {
        for _ in 0..5 {
            if !reply.status.is_redirection() {
                return reply;
            }
            let to = reply.location().expect("Location").to_owned();
            assert!(to.starts_with('/'), "redirects stay on the site: {to}");
            reply = self.get(&to).await;
        }
        panic!("too many redirects");
    }

    /// Signs in through the console's sign-in form; returns the reply to the form post.
    async fn sign_in(&mut self, email: &str, password: &str) -> Reply {
        let page = self.get("/console/login").await;
        assert_eq!(page.status, StatusCode::OK);
        let mut form = page.form("email");
        form.set("email", email).set("password", password);
        self.submit(&form).await
    }

    /// Signs in and expects to land on a console page.
    async fn signed_in(app: &'a TestApp, email: &str) -> Self {
        let mut browser = Self::new(app);
        let reply = browser.sign_in(email, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert!(browser.cookie(ACCESS).is_some() && browser.cookie(REFRESH).is_some());
        browser
    }

    /// An admin signs in with the current TOTP code.
    async fn admin(app: &'a TestApp, tenant: &seed::Tenant) -> Self {
        Self::with_totp(app, &tenant.admin_email, tenant.admin_totp_secret()).await
    }

    /// A user enrolled in MFA signs in with the current TOTP code.
    async fn with_totp(app: &'a TestApp, email: &str, totp_secret: &str) -> Self {
        let mut browser = Self::new(app);
        let reply = browser.sign_in(email, PASSWORD).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "the code is asked for"
        );
        let mut form = reply.form("totp_code");
        form.set("totp_code", &totp_code(totp_secret, 1));
        let reply = browser.submit(&form).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        browser
    }
}

fn assert_session_cookie(cookie: &Cookie<'_>) {
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(cookie.same_site(), Some(SameSite::Strict), "{cookie}");
    assert_eq!(cookie.path(), Some("/console"), "{cookie}");
}

fn assert_console_csp(reply: &Reply, what: &str) {
    let csp = reply.header("content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("style-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert_eq!(reply.header("x-frame-options"), "DENY", "{what}");
    assert_eq!(reply.header("x-content-type-options"), "nosniff", "{what}");
}

/// The API sessions of a user, seen through a fresh API sign-in (which adds one).
async fn api_sessions(app: &TestApp, email: &str) -> usize {
    let (status, login) = app
        .login(json!({ "email": email, "password": PASSWORD }))
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let token = login["access_token"].as_str().unwrap();
    let (status, sessions) = app
        .call(Method::GET, "/api/v1/auth/sessions", token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    sessions.as_array().unwrap().len()
}

async fn refresh_status(app: &TestApp, refresh_token: &str) -> StatusCode {
    app.client
        .post(app.url("/api/v1/auth/refresh"))
        .json(&json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .unwrap()
        .status()
}

on_both_backends! {
    async fn the_sign_in_page_sets_the_csrf_cookie_and_labels_its_fields(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let mut browser = Browser::new(&app);
        let page = browser.get("/console/login").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.header("content-type").starts_with("text/html"));
        assert_eq!(page.header("cache-control"), "no-store");
        let csrf = page.cookie(CSRF).expect("the CSRF cookie is set");
        assert_session_cookie(csrf);
        assert!(csrf.value().len() >= 32, "a long random token");
        assert_console_csp(&page, "sign-in page");
        page.assert_well_formed("sign-in page");

        let form = page.form("email");
        assert_eq!(form.action, "/console/login");
        assert_eq!(form.get("_csrf"), Some(csrf.value()), "double submit: the form carries the cookie's token");
        for (id, kind) in [("email", "email"), ("password", "password"), ("tenant", "text")] {
            let field = html::by_id(&page.body, id).unwrap();
            assert_eq!(field.attr("type"), Some(kind));
            assert!(html::select(&page.body, |t| t.name == "label" && t.attr("for") == Some(id)).len() == 1, "#{id} is labelled");
        }
        assert!(!page.has("totp_code"), "the code is only asked for when needed");
        assert!(html::select(&page.body, |t| t.name == "button" && t.attr("type") == Some("submit")).len() == 1);

        // The token stays the same for the session: a second page does not replace it.
        let again = browser.get("/console/login").await;
        assert!(again.cookie(CSRF).is_none());
        assert_eq!(again.form("email").get("_csrf"), Some(browser.csrf().as_str()));

        // Off-site `next` values are dropped from the form.
        for next in ["//evil.example", "https://evil.example/console", "/console/../api", "/console/%2E%2E/api", "/\\evil.example"] {
            let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("next", next).finish();
            let page = browser.get(&format!("/console/login?{query}")).await;
            assert_eq!(page.status, StatusCode::OK);
            let kept = page.form("email").get("next").unwrap_or_default().to_owned();
            assert!(kept == "/console" || kept.is_empty(), "{next} became {kept}");
        }
    }

    async fn forms_without_the_csrf_token_are_refused_and_change_nothing(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        let sessions_before = api_sessions(&app, "rita@acme.test").await;

        let mut browser = Browser::new(&app);
        browser.get("/console/login").await;
        let credentials = |csrf: Option<&str>| {
            let mut fields = vec![("email".to_owned(), "rita@acme.test".to_owned()), ("password".to_owned(), PASSWORD.to_owned())];
            if let Some(csrf) = csrf {
                fields.push(("_csrf".to_owned(), csrf.to_owned()));
            }
            fields
        };
        let wrong = "x".repeat(43);
        for (what, fields) in [("no token", credentials(None)), ("a wrong token", credentials(Some(&wrong))), ("an empty token", credentials(Some("")))] {
            let reply = browser.post("/console/login", &fields).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}");
            assert!(reply.cookie(ACCESS).is_none() && reply.cookie(REFRESH).is_none(), "{what}: not signed in");
            assert!(reply.body.contains("CSRF"), "{what}: the page says why");
            assert_console_csp(&reply, "CSRF refusal");
        }
        // Without any CSRF cookie (a cross-site form cannot read or set it), even a token is refused.
        let mut stranger = Browser::new(&app);
        let reply = stranger.post("/console/login", &credentials(Some(&wrong))).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(api_sessions(&app, "rita@acme.test").await, sessions_before + 1, "only the check's own sign-in made a session");

        // Signed in, a sign-out without the token does not sign out.
        let mut browser = Browser::signed_in(&app, "rita@acme.test").await;
        let refresh_token = browser.cookie(REFRESH).unwrap().to_owned();
        let reply = browser.post("/console/logout", &[("_csrf".to_owned(), wrong.clone())]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert!(reply.set_cookies.iter().all(|c| c.name() != ACCESS && c.name() != REFRESH));
        let home = browser.get("/console").await;
        assert_eq!(home.status, StatusCode::SEE_OTHER);
        assert_eq!(home.location(), Some("/console/review"), "still signed in");
        assert_eq!(browser.cookie(REFRESH), Some(refresh_token.as_str()));

        // A JSON body is not a console form.
        let response = app.client.post(app.url("/console/logout"))
            .header("cookie", format!("{CSRF}={}; {ACCESS}={}; {REFRESH}={}", browser.csrf(), browser.cookie(ACCESS).unwrap(), refresh_token))
            .json(&json!({ "_csrf": browser.csrf() }))
            .send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(refresh_status(&app, &refresh_token).await, StatusCode::OK, "the session was never ended");
    }

    async fn a_wrong_password_shows_the_form_again_without_a_session(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        let mut browser = Browser::new(&app);
        let reply = browser.sign_in("rita@acme.test", "not the password at all").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.cookie(ACCESS).is_none() && reply.cookie(REFRESH).is_none());
        assert!(browser.cookie(ACCESS).is_none());
        let flash = reply.flash().expect("an error message");
        assert!(flash.to_lowercase().contains("password") || flash.to_lowercase().contains("invalid"), "{flash}");
        let form = reply.form("email");
        assert_eq!(form.get("email"), Some("rita@acme.test"), "the email is kept");
        assert_eq!(form.get("password"), Some(""), "the password is not sent back");
        assert!(!reply.body.contains("not the password at all"));
        reply.assert_well_formed("failed sign-in");

        // An unknown address looks the same.
        let unknown = browser.sign_in("nobody@acme.test", "not the password at all").await;
        assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
        assert_eq!(unknown.flash(), Some(flash));
    }

    async fn signing_in_sets_strict_http_only_cookies_and_goes_to_next(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "sam@acme.test", "Sam Supervisor", "supervisor").await;

        let mut browser = Browser::new(&app);
        let page = browser.get("/console/login?next=%2Fconsole%2Ftasks%3Fstatus%3Dactive").await;
        let mut form = page.form("email");
        assert_eq!(form.get("next"), Some("/console/tasks?status=active"));
        form.set("email", "SAM@acme.test").set("password", PASSWORD);
        let reply = browser.submit(&form).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert_eq!(reply.location(), Some("/console/tasks?status=active"));
        for name in [ACCESS, REFRESH] {
            assert_session_cookie(reply.cookie(name).unwrap_or_else(|| panic!("{name} is set")));
        }
        assert_ne!(reply.cookie(ACCESS).unwrap().secure(), Some(true), "plain HTTP in development");
        let (status, me) = app.call(Method::GET, "/api/v1/auth/me", browser.cookie(ACCESS).unwrap(), None).await;
        assert_eq!(status, StatusCode::OK, "the cookie holds the user's API session");
        assert_eq!(me["user"]["email"], "sam@acme.test");

        // Without `next`, each role starts where its work is.
        let home = browser.get("/console").await;
        assert_eq!(home.location(), Some("/console/supervise"));

        // `next` pointing elsewhere is ignored, whatever the form says.
        for next in ["//evil.example", "https://evil.example", "http://evil.example/console", "/\\evil.example", "/console//evil.example", "/console/../api/v1/users", "javascript:alert(1)", "/api/v1/users", "/console/login"] {
            let mut browser = Browser::new(&app);
            let page = browser.get("/console/login").await;
            let mut form = page.form("email");
            form.set("email", "sam@acme.test").set("password", PASSWORD).set("next", next);
            let reply = browser.submit(&form).await;
            assert_eq!(reply.status, StatusCode::SEE_OTHER, "{next}");
            assert_eq!(reply.location(), Some("/console"), "{next} is not followed");
        }
    }

    async fn an_email_in_two_tenants_signs_in_to_the_tenant_named(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        for slug in ["acme", "globex"] {
            let tenant = seed::tenant(&app, slug).await;
            seed::user(&app, &tenant, "sam@shared.test", "Sam", "supervisor").await;
        }
        let mut browser = Browser::new(&app);
        let reply = browser.sign_in("sam@shared.test", PASSWORD).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
        let form = reply.form("email");
        assert_eq!(form.get("email"), Some("sam@shared.test"), "the email is kept");
        let mut form = form;
        form.set("password", PASSWORD).set("tenant", "globex");
        let reply = browser.submit(&form).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let (_, me) = app.call(Method::GET, "/api/v1/auth/me", browser.cookie(ACCESS).unwrap(), None).await;
        let globex = docket::auth::tenants::find_by_slug(&app.state.store, "globex").await.unwrap().unwrap();
        assert_eq!(me["user"]["tenant_id"], globex.id.as_str());
    }

    async fn signed_out_visitors_are_sent_to_sign_in_and_back(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        let mut browser = Browser::new(&app);
        let reply = browser.get("/console/review").await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        assert_eq!(reply.location(), Some("/console/login?next=%2Fconsole%2Freview"));
        let page = browser.follow(reply).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.flash().is_some(), "the page says why");
        let mut form = page.form("email");
        assert_eq!(form.get("next"), Some("/console/review"));
        form.set("email", "rita@acme.test").set("password", PASSWORD);
        let reply = browser.submit(&form).await;
        assert_eq!(reply.location(), Some("/console/review"));
        let desk = browser.follow(reply).await;
        assert_eq!(desk.status, StatusCode::OK);
        assert!(desk.has("next-case"));

        // A token that is not one is no session either.
        let mut forged = Browser::new(&app);
        forged.cookies.insert(ACCESS.to_owned(), "not-a-token".to_owned());
        forged.cookies.insert(REFRESH.to_owned(), "dr_not-a-token".to_owned());
        let reply = forged.get("/console/review?queue=default").await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        assert_eq!(reply.location(), Some("/console/login?next=%2Fconsole%2Freview%3Fqueue%3Ddefault"));
    }

    async fn an_expired_access_token_is_refreshed_with_the_refresh_cookie(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        let mut browser = Browser::signed_in(&app, "rita@acme.test").await;
        let access = browser.cookie(ACCESS).unwrap().to_owned();
        let refresh = browser.cookie(REFRESH).unwrap().to_owned();

        // The same token, expired a minute ago (access tokens live at least a minute, too long to
        // wait for in a test).
        let expired = {
            use base64::Engine;
            let payload = access.split('.').nth(1).unwrap();
            let mut claims: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            claims["exp"] = json!(chrono::Utc::now().timestamp() - 60);
            let header: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(access.split('.').next().unwrap()).unwrap()).unwrap();
            let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            jwt_header.kid = header["kid"].as_str().map(str::to_owned);
            jsonwebtoken::encode(&jwt_header, &claims, &jsonwebtoken::EncodingKey::from_secret(app.state.secret_key.expose().as_bytes())).unwrap()
        };
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &expired, None).await.0, StatusCode::UNAUTHORIZED, "the API refuses it");
        browser.cookies.insert(ACCESS.to_owned(), expired);

        let reply = browser.get("/console").await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        assert_eq!(reply.location(), Some("/console/review"), "no sign-in needed");
        let new_access = reply.cookie(ACCESS).expect("a new access token").value().to_owned();
        let new_refresh = reply.cookie(REFRESH).expect("a rotated refresh token").value().to_owned();
        assert_session_cookie(reply.cookie(ACCESS).unwrap());
        assert_session_cookie(reply.cookie(REFRESH).unwrap());
        // (The new access token may equal the original one, issued in the same second for the same
        // session; what matters is that it is current and the refresh token was rotated.)
        assert_ne!(new_refresh, refresh);
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &new_access, None).await.0, StatusCode::OK);

        // The new pair is used from now on, without refreshing again.
        let reply = browser.get("/console").await;
        assert_eq!(reply.location(), Some("/console/review"));
        assert!(reply.cookie(ACCESS).is_none() && reply.cookie(REFRESH).is_none());

        // Once the session is over, an expired token and its refresh token lead to sign-in.
        seed::revoke_session(&app, &new_access).await;
        let reply = browser.get("/console/review").await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        assert_eq!(reply.location(), Some("/console/login?next=%2Fconsole%2Freview"));
    }

    async fn signing_out_revokes_the_session_and_clears_the_cookies(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        let mut browser = Browser::signed_in(&app, "rita@acme.test").await;
        let access = browser.cookie(ACCESS).unwrap().to_owned();
        let refresh = browser.cookie(REFRESH).unwrap().to_owned();

        // The sign-out form is in the header of every page.
        let reply = browser.get("/console").await;
        let page = browser.follow(reply).await;
        assert_eq!(page.status, StatusCode::OK);
        let sign_out = html::select(&page.body, |t| t.name == "form" && t.attr("action") == Some("/console/logout"));
        assert_eq!(sign_out.len(), 1, "one sign-out form");
        let form = html::form_to(&page.body, "/console/logout").unwrap();
        let reply = browser.submit(&form).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        assert_eq!(reply.location(), Some("/console/login"));
        for name in [ACCESS, REFRESH] {
            let cleared = reply.cookie(name).unwrap_or_else(|| panic!("{name} is cleared"));
            assert!(cleared.max_age().is_some_and(|a| a.is_zero()) && cleared.value().is_empty(), "{cleared}");
        }
        assert!(browser.cookie(ACCESS).is_none() && browser.cookie(REFRESH).is_none());
        let page = browser.follow(reply).await;
        assert!(page.flash().is_some_and(|f| f.contains("signed out")), "{:?}", page.flash());

        assert_eq!(refresh_status(&app, &refresh).await, StatusCode::UNAUTHORIZED, "the refresh token is dead");
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &access, None).await.0, StatusCode::UNAUTHORIZED);
        // Old cookies replayed (e.g. from a copy) do not bring the session back.
        browser.cookies.insert(ACCESS.to_owned(), access);
        browser.cookies.insert(REFRESH.to_owned(), refresh);
        let reply = browser.get("/console/review").await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        assert!(reply.location().unwrap().starts_with("/console/login?next="));
    }

    async fn users_with_totp_are_asked_for_the_code(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        // Rita turns on MFA (optional for reviewers) through the API.
        let (_, login) = app.login(json!({ "email": "rita@acme.test", "password": PASSWORD })).await;
        let token = login["access_token"].as_str().unwrap().to_owned();
        let (_, enrolment) = app.call(Method::POST, "/api/v1/auth/mfa/enrol", &token, None).await;
        let secret = enrolment["secret"].as_str().unwrap().to_owned();
        let (status, body) = app.call(Method::POST, "/api/v1/auth/mfa/confirm", &token, Some(json!({ "code": totp_code(&secret, 0) }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let recovery: Vec<String> = serde_json::from_value(body["recovery_codes"].clone()).unwrap();

        let mut browser = Browser::new(&app);
        let page = browser.get("/console/login?next=%2Fconsole%2Freview").await;
        let mut form = page.form("email");
        form.set("email", "rita@acme.test").set("password", PASSWORD);
        let reply = browser.submit(&form).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.cookie(ACCESS).is_none(), "not signed in yet");
        assert!(reply.has("totp_code"), "the code is asked for");
        assert!(html::select(&reply.body, |t| t.name == "label" && t.attr("for") == Some("totp_code")).len() == 1);
        assert!(reply.flash().is_some_and(|f| f.contains("code")), "{:?}", reply.flash());
        reply.assert_well_formed("code step");

        let mut form = reply.form("totp_code");
        assert_eq!(form.get("email"), Some("rita@acme.test"));
        assert_eq!(form.get("next"), Some("/console/review"), "next survives the second step");
        form.set("totp_code", "000000");
        let wrong = browser.submit(&form).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.cookie(ACCESS).is_none());
        assert!(wrong.has("totp_code"), "asked again");

        let mut form = wrong.form("totp_code");
        form.set("totp_code", &totp_code(&secret, 1));
        let reply = browser.submit(&form).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert_eq!(reply.location(), Some("/console/review"));
        assert!(browser.cookie(ACCESS).is_some());

        // A recovery code works in the same field.
        let mut other = Browser::new(&app);
        let reply = other.sign_in("rita@acme.test", PASSWORD).await;
        let mut form = reply.form("totp_code");
        form.set("totp_code", &recovery[0]);
        let reply = other.submit(&form).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    }

    async fn admins_without_mfa_are_sent_to_enrol(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        app.create_user("acme", "ada@acme.test", Role::Admin, false).await;
        let mut browser = Browser::new(&app);
        let page = browser.get("/console/login?next=%2Fconsole%2Fusers").await;
        let mut form = page.form("email");
        form.set("email", "ada@acme.test").set("password", PASSWORD);
        let reply = browser.submit(&form).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert_eq!(reply.location(), Some("/console/mfa"), "enrolment comes first");
        assert!(browser.cookie(ACCESS).is_some());
        for path in ["/console", "/console/users", "/console/review", "/console/policy"] {
            let reply = browser.get(path).await;
            assert_eq!(reply.status, StatusCode::SEE_OTHER, "{path}");
            assert_eq!(reply.location(), Some("/console/mfa"), "{path}");
        }

        let page = browser.get("/console/mfa").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_well_formed("MFA enrolment");
        assert!(page.body.contains("otpauth://totp/"), "the otpauth URI is shown");
        let form = page.form("code");
        let secret = form_secret(&page).expect("the secret is shown");
        let mut form = form;
        form.set("code", "000000");
        let reply = browser.submit(&form).await;
        let wrong = browser.follow(reply).await;
        assert!(wrong.flash().is_some(), "a wrong code is refused with a message");
        assert_eq!(browser.get("/console/users").await.location(), Some("/console/mfa"), "still not enrolled");

        let page = if wrong.has("code") { wrong } else { browser.get("/console/mfa").await };
        let secret = form_secret(&page).unwrap_or(secret);
        let mut form = page.form("code");
        form.set("code", &totp_code(&secret, 0));
        let reply = browser.submit(&form).await;
        let done = browser.follow(reply).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        let users = browser.get("/console/users").await;
        assert_eq!(users.status, StatusCode::OK, "enrolled admins get in: {}", users.body);
        assert!(users.has("users"));
    }

    async fn pages_carry_the_console_csp_and_assets_are_served(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "sam@acme.test", "Sam Supervisor", "supervisor").await;
        let mut browser = Browser::signed_in(&app, "sam@acme.test").await;
        let page = browser.get("/console/supervise").await;
        assert_eq!(page.status, StatusCode::OK);
        assert_console_csp(&page, "supervision");
        assert_eq!(page.header("referrer-policy"), "same-origin");
        let stylesheets = html::select(&page.body, |t| t.name == "link" && t.attr("rel") == Some("stylesheet"));
        let scripts = html::select(&page.body, |t| t.name == "script");
        assert_eq!(stylesheets.len(), 1);
        assert_eq!(scripts.len(), 1);
        for (path, kind, marker) in [
            (stylesheets[0].attr("href").unwrap(), "text/css", ".panel"),
            (scripts[0].attr("src").unwrap(), "text/javascript", "EventSource"),
        ] {
            assert!(path.starts_with("/console/assets/"), "{path}: served by the console itself");
            let asset = browser.get(path).await;
            assert_eq!(asset.status, StatusCode::OK, "{path}");
            assert!(asset.header("content-type").starts_with(kind), "{path}");
            assert!(asset.body.contains(marker), "{path}");
            assert_eq!(asset.header("x-content-type-options"), "nosniff");
        }
        // Error pages too.
        let missing = browser.get("/console/cases/00000000-0000-0000-0000-000000000000").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
        assert!(missing.header("content-type").starts_with("text/html"));
        assert_console_csp(&missing, "not found");
        // The API keeps its own policy.
        let api = app.get("/api/v1/health").await;
        assert!(api.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    }

    async fn the_code_step_of_sign_in_does_not_hold_the_password(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        let mut browser = Browser::new(&app);
        let reply = browser.sign_in(&tenant.admin_email, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "the code is asked for");
        assert!(!reply.body.contains(PASSWORD), "{}", reply.body);
        let mut form = reply.form("totp_code");
        assert!(form.get("password").is_none_or(str::is_empty), "no password field in the second step");
        assert!(form.get("mfa_token").is_some_and(|t| t.starts_with("dm_")), "{}", reply.body);
        // A wrong code: the page asks again, still without the password.
        form.set("totp_code", "000000");
        let again = browser.submit(&form).await;
        assert_eq!(again.status, StatusCode::UNAUTHORIZED);
        assert!(!again.body.contains(PASSWORD));
        // The used token cannot be replayed with a good code.
        form.set("totp_code", &totp_code(tenant.admin_totp_secret(), 1));
        let replay = browser.submit(&form).await;
        assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.body);
        assert!(replay.body.contains("id=\"password\""), "back to the first step: {}", replay.body);
        // The fresh token from the wrong-code page works.
        let mut form = again.form("totp_code");
        form.set("totp_code", &totp_code(tenant.admin_totp_secret(), 1));
        let done = browser.submit(&form).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    }

    async fn viewers_cannot_reach_admin_pages(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "val@acme.test", "Val Viewer", "viewer").await;
        seed::user(&app, &tenant, "sam@acme.test", "Sam Supervisor", "supervisor").await;
        let mut viewer = Browser::signed_in(&app, "val@acme.test").await;
        let home = viewer.get("/console").await;
        assert_eq!(home.location(), Some("/console/tasks"));
        let tasks = viewer.get("/console/tasks").await;
        assert_eq!(tasks.status, StatusCode::OK);
        for path in ["/console/users", "/console/api-keys", "/console/policy", "/console/audit", "/console/supervise", "/console/workers"] {
            let reply = viewer.get(path).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}: {}", reply.body);
            assert!(reply.header("content-type").starts_with("text/html"), "{path}");
            assert!(!tasks.body.contains(&format!("href=\"{path}\"")), "the navigation does not offer {path}");
        }
        let reply = viewer.get("/console/review").await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "viewers do not review: {}", reply.body);

        let mut supervisor = Browser::signed_in(&app, "sam@acme.test").await;
        for path in ["/console/api-keys", "/console/policy"] {
            let reply = supervisor.get(path).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        }
        // Supervisors may read the users (as the API allows) but not change them.
        let users = supervisor.get("/console/users").await;
        assert_eq!(users.status, StatusCode::OK);
        assert!(users.has("users") && !users.has("new-user"), "no form for what the API would refuse");
        assert_eq!(supervisor.get("/console/audit").await.status, StatusCode::OK, "supervisors read the audit log");
    }
}

/// The MFA secret shown on the enrolment page: the `secret=` of the otpauth URI.
fn form_secret(page: &Reply) -> Option<String> {
    let at = page.body.find("otpauth://totp/")?;
    let uri = &page.body[at..];
    let end = uri.find(['"', '<', ' ']).unwrap_or(uri.len());
    let uri = html::decode(&uri[..end]);
    url::Url::parse(&uri)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.into_owned())
}

/// The ids of the rows of the review queue table.
fn queue_ids(page: &Reply) -> Vec<String> {
    let Some(table) = html::by_id(&page.body, "queue") else {
        return Vec::new();
    };
    let range = html::inner_range(&page.body, &table);
    html::select(&page.body, |t| {
        t.name == "tr" && t.start >= range.start && t.start < range.end
    })
    .iter()
    .filter_map(|t| t.attr("data-case-id").map(str::to_owned))
    .collect()
}

/// Submits the case page's form with the button `button` (its id) after filling `fields`; a
/// `reason_codes` field ticks that code's box (several may be ticked). Returns the reply to the post.
async fn act(
    browser: &mut Browser<'_>,
    case_id: &str,
    button: &str,
    fields: &[(&str, &str)],
) -> Reply {
    let page = browser.get(&format!("/console/cases/{case_id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let mut form = page.form(button);
    for (name, value) in fields {
        if *name == "reason_codes" {
            form.add(name, value);
        } else {
            form.set(name, value);
        }
    }
    let reply = browser.submit(&form).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    reply
}

/// An action through the case page's form with a reason; returns the page it leads to.
async fn decide(browser: &mut Browser<'_>, case_id: &str, button: &str, reason: &str) -> Reply {
    let reply = act(browser, case_id, button, &[("reason", reason)]).await;
    browser.follow(reply).await
}

/// The text of the console's flash after following `reply`, and whether it is an error.
async fn flash_after(browser: &mut Browser<'_>, reply: Reply) -> (String, bool) {
    let page = browser.follow(reply).await;
    let error = page.body.contains("class=\"flash error\"");
    (page.flash().unwrap_or_default(), error)
}

on_both_backends! {
    async fn a_reviewer_takes_the_next_case_and_approves_it(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::dual_control_policy(&app, &tenant).await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        let case = seed::case(&app, &tenant, "CHQ-1", "120.50", "Ann Smith").await;
        let case_id = case["id"].as_str().unwrap().to_owned();

        let mut rita = Browser::signed_in(&app, "rita@acme.test").await;
        let desk = rita.get("/console/review").await;
        assert_eq!(desk.status, StatusCode::OK);
        desk.assert_well_formed("review desk");
        assert_eq!(queue_ids(&desk), std::slice::from_ref(&case_id));
        assert!(desk.body.contains("CHQ-1") && desk.body.contains("120.50"));

        // A forged post claims nothing.
        let forged = rita.post("/console/review/next", &[]).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        assert_eq!(seed::case_now(&app, &tenant, &case_id).await["state"], "queued");

        let reply = rita.submit(&desk.form("next-case")).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert_eq!(reply.location(), Some(format!("/console/cases/{case_id}").as_str()), "flash: {:?}", reply.cookie("docket_flash").map(|c| c.value().to_owned()));
        let page = rita.follow(reply).await;
        assert_eq!(page.status, StatusCode::OK);
        page.assert_well_formed("case page");
        assert_console_csp(&page, "case page");
        assert!(page.text_of("case-status").to_lowercase().replace('_', " ").contains("in review"), "{}", page.text_of("case-status"));
        assert!(!page.has("dual-control"), "a small amount needs one reviewer");
        for button in ["approve", "reject", "return", "hold", "escalate", "needs-more-info", "release"] {
            let tag = html::by_id(&page.body, button).unwrap_or_else(|| panic!("#{button}"));
            assert_eq!(tag.name, "button", "#{button} is a button");
        }
        assert_eq!(html::by_id(&page.body, "decision-reason").unwrap().name, "textarea");
        assert_eq!(html::by_id(&page.body, "hold-until").unwrap().attr("type"), Some("datetime-local"));
        let hold_label = html::select(&page.body, |t| t.name == "label" && t.attr("for") == Some("hold-until"));
        assert!(html::text(html::inner_html(&page.body, &hold_label[0])).contains("UTC"), "the hold time's zone is named");
        assert!(page.body.contains("low risk"), "the risk level is shown");
        assert!(page.has("history"));
        let claimed = seed::case_now(&app, &tenant, &case_id).await;
        assert_eq!(claimed["state"], "in_review");

        let desk = decide(&mut rita, &case_id, "approve", "Signature matches.").await;
        assert_eq!(desk.flash().as_deref(), Some("Case approved."));
        let page = rita.get(&format!("/console/cases/{case_id}")).await;
        assert!(page.text_of("case-status").to_lowercase().contains("approved"));
        assert!(page.text_of("history").contains("Signature matches."), "the reason is in the history");
        let decided = seed::case_now(&app, &tenant, &case_id).await;
        assert_eq!(decided["state"], "approved", "{decided}");
        assert!(decided["history"].as_array().unwrap().iter().any(|h| h["reason"] == "Signature matches."));

        let desk = rita.get("/console/review").await;
        assert!(queue_ids(&desk).is_empty(), "it left the queue");
        let reply = rita.submit(&desk.form("next-case")).await;
        assert_eq!(reply.location(), Some("/console/review"));
        let desk = rita.follow(reply).await;
        assert!(desk.flash().is_some_and(|f| f.to_lowercase().contains("no case")), "an empty queue says so: {:?}", desk.flash());
    }
}

on_both_backends! {
    async fn dual_control_is_maker_checker_in_the_console(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::dual_control_policy(&app, &tenant).await;
        let rita_id = seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        seed::user(&app, &tenant, "rob@acme.test", "Rob Reviewer", "reviewer").await;
        let case = seed::case(&app, &tenant, "CHQ-7", "7500.00", "Ann Smith").await;
        let case_id = case["id"].as_str().unwrap().to_owned();
        assert_eq!(case["dual_control"], true);

        // Rita, the maker, proposes.
        let mut rita = Browser::signed_in(&app, "rita@acme.test").await;
        let desk = rita.get("/console/review").await;
        let reply = rita.submit(&desk.form("next-case")).await;
        assert_eq!(reply.location(), Some(format!("/console/cases/{case_id}").as_str()));
        let page = rita.follow(reply).await;
        assert!(page.text_of("dual-control").contains("No proposal yet"), "{}", page.text_of("dual-control"));
        assert!(page.body.contains("7,500.00"), "the amount is shown exactly, grouped");
        let desk = decide(&mut rita, &case_id, "approve", "Looks right.").await;
        let flash = desk.flash().unwrap_or_default();
        assert!(flash.starts_with("Proposed: approve"), "{flash}");
        assert_eq!(seed::case_now(&app, &tenant, &case_id).await["state"], "pending_dual_control");
        let page = rita.get(&format!("/console/cases/{case_id}")).await;
        page.assert_well_formed("case pending dual control");
        let summary = page.text_of("dual-control");
        assert!(summary.contains("Proposed: approve by Rita Reviewer (you) — waiting for a checker"), "{summary}");
        let proposal = page.text_of("proposal");
        assert!(proposal.contains("Looks right.") && proposal.contains("approve"), "{proposal}");
        assert!(!page.has("confirm") && !page.has("claim"), "nothing to check for the maker");
        assert!(page.text_of("check-refused").contains("You proposed this decision"), "{}", page.text_of("check-refused"));

        // Her own check, forged, is refused by the API and changes nothing.
        let csrf = rita.csrf();
        let forged = rita.post(&format!("/console/cases/{case_id}/check"), &[
            ("_csrf".to_owned(), csrf), ("verdict".to_owned(), "approve".to_owned()),
        ]).await;
        assert_eq!(forged.status, StatusCode::SEE_OTHER);
        let (_, error) = flash_after(&mut rita, forged).await;
        assert!(error, "an error is shown");
        assert_eq!(seed::case_now(&app, &tenant, &case_id).await["state"], "pending_dual_control", "nothing changed");
        let desk = rita.get("/console/review").await;
        let reply = rita.submit(&desk.form("next-case")).await;
        assert_eq!(reply.location(), Some("/console/review"), "her own proposal is not offered to her");

        // Rob, the checker, sends it back: notes are required.
        let mut rob = Browser::signed_in(&app, "rob@acme.test").await;
        let desk = rob.get("/console/review").await;
        assert_eq!(queue_ids(&desk), std::slice::from_ref(&case_id), "waiting for a checker");
        assert!(desk.text_of("queue").contains("Waiting for a checker"), "{}", desk.text_of("queue"));
        let reply = rob.submit(&desk.form("next-case")).await;
        assert_eq!(reply.location(), Some(format!("/console/cases/{case_id}").as_str()));
        let page = rob.follow(reply).await;
        page.assert_well_formed("check form");
        // A reviewer may not list users, yet sees people by name: the maker, and the intake key.
        let proposal = page.text_of("proposal");
        assert!(proposal.contains("Rita Reviewer"), "who proposed, by name: {proposal}");
        assert!(!page.body.contains(&rita_id), "no user id is shown to people");
        assert!(page.body.contains("API key “intake”"), "the submitting key by its name");
        assert!(page.has("confirm") && page.has("send-back"), "the checker's buttons");
        assert!(!page.has("approve"), "a proposal is checked, not decided again");
        let reply = act(&mut rob, &case_id, "send-back", &[]).await;
        let (flash, error) = flash_after(&mut rob, reply).await;
        assert!(error && flash.contains("notes"), "{flash}");
        assert_eq!(seed::case_now(&app, &tenant, &case_id).await["state"], "pending_dual_control");
        let reply = act(&mut rob, &case_id, "send-back", &[("notes", "The amount in words differs.")]).await;
        let (flash, error) = flash_after(&mut rob, reply).await;
        assert!(!error, "{flash}");
        assert_eq!(flash, "Sent back: the case is in the queue again.");
        let back = seed::case_now(&app, &tenant, &case_id).await;
        assert_eq!(back["state"], "queued", "{back}");
        assert!(back["history"].as_array().unwrap().iter().any(|h| h["action"] == "sent_back" && h["notes"] == "The amount in words differs."));

        // Rita proposes again; Rob confirms from the case page, which claims it for him first.
        let desk = rita.get("/console/review").await;
        let reply = rita.submit(&desk.form("next-case")).await;
        assert_eq!(reply.location(), Some(format!("/console/cases/{case_id}").as_str()));
        let desk = decide(&mut rita, &case_id, "reject", "Words and figures differ.").await;
        assert!(desk.flash().unwrap_or_default().starts_with("Proposed: reject"), "{:?}", desk.flash());
        let page = rob.get(&format!("/console/cases/{case_id}")).await;
        assert!(page.text_of("decide-heading").contains("Decision"));
        assert!(page.body.contains("claims the case for you first"));
        let reply = act(&mut rob, &case_id, "confirm", &[("notes", "Agreed.")]).await;
        let (flash, _) = flash_after(&mut rob, reply).await;
        assert_eq!(flash, "Confirmed: case rejected.");
        let decided = seed::case_now(&app, &tenant, &case_id).await;
        assert_eq!(decided["state"], "rejected", "{decided}");
        let page = rob.get(&format!("/console/cases/{case_id}")).await;
        let summary = page.text_of("dual-control");
        assert!(summary.contains("Confirmed by Rob Reviewer (you)"), "{summary}");
        assert!(summary.contains("sent it back: The amount in words differs."), "each step is listed: {summary}");
        let actors: std::collections::HashSet<&str> = decided["history"].as_array().unwrap().iter()
            .filter(|h| h["action"] == "proposed" || h["action"] == "confirmed").filter_map(|h| h["actor"].as_str()).collect();
        assert_eq!(actors.len(), 2, "maker and checker are two people: {decided}");
        assert!(queue_ids(&rob.get("/console/review").await).is_empty());
    }

    async fn returns_holds_and_requests_for_information_go_through_the_case_form(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::reason_codes(&app, &tenant).await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        seed::user(&app, &tenant, "sam@acme.test", "Sam Supervisor", "supervisor").await;
        let returned = seed::case(&app, &tenant, "CHQ-R", "120.00", "Ann").await["id"].as_str().unwrap().to_owned();
        let held = seed::case(&app, &tenant, "CHQ-H", "130.00", "Bob").await["id"].as_str().unwrap().to_owned();
        let asked = seed::case(&app, &tenant, "CHQ-I", "140.00", "Cy").await["id"].as_str().unwrap().to_owned();
        seed::set_risk(&app, &returned, "high", &["UNUSUAL_AMOUNT"]).await;

        let mut rita = Browser::signed_in(&app, "rita@acme.test").await;
        let desk = rita.get("/console/review").await;
        desk.assert_well_formed("review desk");
        let queue = desk.text_of("queue");
        assert!(queue.contains("Risk") && queue.contains("high risk") && queue.contains("UNUSUAL_AMOUNT"), "{queue}");
        assert!(queue.contains("low risk"), "{queue}");

        // The picker lists the tenant's codes, with their actions and whether they need notes.
        let page = rita.get(&format!("/console/cases/{returned}")).await;
        page.assert_well_formed("case with reason codes");
        for code in ["NSF", "SIG", "CLEARING", "ID"] {
            let tag = html::by_id(&page.body, &format!("code-{code}")).unwrap_or_else(|| panic!("code-{code}"));
            assert_eq!((tag.attr("type"), tag.attr("name")), (Some("checkbox"), Some("reason_codes")));
        }
        let picker = html::select(&page.body, |t| t.name == "fieldset" && t.has_class("reason-codes"));
        let picker = html::text(html::inner_html(&page.body, &picker[0]));
        assert!(picker.contains("Insufficient funds for reject, return"), "{picker}");
        assert!(picker.contains("Signature differs") && picker.contains("notes required"), "{picker}");
        assert!(page.body.contains("high risk") && page.body.contains("UNUSUAL_AMOUNT"), "risk and flags on the case page");

        // A code that requires notes, without notes: refused, nothing decided.
        let reply = act(&mut rita, &returned, "return", &[("reason_codes", "SIG")]).await;
        let (flash, error) = flash_after(&mut rita, reply).await;
        assert!(error && flash.contains("SIG"), "{flash}");
        assert_ne!(seed::case_now(&app, &tenant, &returned).await["state"], "returned");
        // A return with its code.
        let reply = act(&mut rita, &returned, "return", &[("reason_codes", "NSF")]).await;
        assert_eq!(reply.location(), Some("/console/review"));
        let (flash, _) = flash_after(&mut rita, reply).await;
        assert_eq!(flash, "Case returned.");
        let now = seed::case_now(&app, &tenant, &returned).await;
        assert_eq!(now["state"], "returned", "{now}");
        assert_eq!(now["reason_codes"], json!(["NSF"]));
        let page = rita.get(&format!("/console/cases/{returned}")).await;
        assert_eq!(page.text_of("case-reason-codes"), "NSF (Insufficient funds)");
        assert!(page.text_of("history").contains("NSF (Insufficient funds)"), "{}", page.text_of("history"));

        // A hold needs its time (without the console script, as here, read as UTC).
        let reply = act(&mut rita, &held, "hold", &[("reason_codes", "CLEARING")]).await;
        let (flash, error) = flash_after(&mut rita, reply).await;
        assert!(error && flash.contains("until when to hold"), "{flash}");
        assert_eq!(seed::case_now(&app, &tenant, &held).await["state"], "queued", "refused before anything was claimed");
        let until = (chrono::Utc::now() + chrono::Duration::days(2)).format("%Y-%m-%dT%H:%M").to_string();
        let reply = act(&mut rita, &held, "hold", &[("reason_codes", "CLEARING"), ("hold_until", &until)]).await;
        let (flash, error) = flash_after(&mut rita, reply).await;
        assert!(!error, "{flash}");
        let now = seed::case_now(&app, &tenant, &held).await;
        assert_eq!(now["state"], "on_hold", "{now}");
        let stored: chrono::DateTime<chrono::Utc> = now["hold_until"].as_str().unwrap().parse().unwrap();
        assert_eq!(stored.format("%Y-%m-%dT%H:%M").to_string(), until, "the typed time is UTC");
        assert_eq!(flash, format!("Case on hold until {}.", stored.format("%Y-%m-%d %H:%M UTC")));
        let page = rita.get(&format!("/console/cases/{held}")).await;
        assert!(page.text_of("parked").contains("On hold until"), "{}", page.text_of("parked"));
        assert!(!page.has("decision"), "nothing to decide while on hold");
        assert!(!queue_ids(&rita.get("/console/review").await).contains(&held), "held cases leave the queue");

        // Needs more information; a supervisor adds it on the submitter's behalf.
        let reply = act(&mut rita, &asked, "needs-more-info", &[("reason_codes", "ID")]).await;
        let (flash, _) = flash_after(&mut rita, reply).await;
        assert_eq!(flash, "Case waiting for information from the submitter.");
        assert_eq!(seed::case_now(&app, &tenant, &asked).await["state"], "needs_more_info");
        let page = rita.get(&format!("/console/cases/{asked}")).await;
        assert!(page.text_of("parked").contains("Waiting for information"));
        assert!(!page.has("information") && !page.has("views"), "reviewers neither answer for the submitter nor see views");

        let mut sam = Browser::signed_in(&app, "sam@acme.test").await;
        let page = sam.get(&format!("/console/cases/{asked}")).await;
        page.assert_well_formed("case waiting for information");
        let views = page.text_of("views");
        assert!(views.contains("Rita Reviewer") && views.contains("Sam Supervisor (you)"), "this very view is listed: {views}");
        let reply = act(&mut sam, &asked, "add-information", &[("notes", "Passport copy received by email.")]).await;
        let (flash, _) = flash_after(&mut sam, reply).await;
        assert_eq!(flash, "Information added; the case is in the queue again.");
        let now = seed::case_now(&app, &tenant, &asked).await;
        assert_eq!(now["state"], "queued", "{now}");
        assert!(now["history"].as_array().unwrap().iter().any(|h| h["action"] == "information_added" && h["notes"] == "Passport copy received by email."));
    }

    async fn admins_manage_reason_codes_in_the_console(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        let mut ada = Browser::admin(&app, &tenant).await;
        let page = ada.get("/console/reason-codes").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_well_formed("reason codes");
        assert!(page.body.contains("href=\"/console/reason-codes\""), "in the admin navigation");

        let mut form = page.form("create-reason-code");
        form.set("code", "NSF").set("label", "Insufficient funds").set("requires_notes", "true");
        form.add("actions", "return").add("actions", "reject");
        let reply = ada.submit(&form).await;
        let (flash, error) = flash_after(&mut ada, reply).await;
        assert!(!error, "{flash}");
        assert_eq!(flash, "Reason code NSF added.");
        let codes = seed::reason_codes_now(&app, &tenant).await;
        assert_eq!(codes.len(), 1, "{codes:?}");
        assert_eq!((codes[0]["label"].as_str(), codes[0]["requires_notes"].as_bool()), (Some("Insufficient funds"), Some(true)));
        assert_eq!(codes[0]["actions"], json!(["reject", "return"]));

        // The same code twice: the API's refusal is shown.
        let reply = ada.submit(&form).await;
        let (flash, error) = flash_after(&mut ada, reply).await;
        assert!(error && flash.contains("already exists"), "{flash}");

        // Edit: a new label, reject no longer, notes optional.
        let page = ada.get("/console/reason-codes").await;
        let mut edit = page.form("edit-NSF-save");
        assert_eq!(edit.get("label"), Some("Insufficient funds"));
        edit.set("label", "Not sufficient funds").remove("actions", "reject").remove("requires_notes", "true");
        let reply = ada.submit(&edit).await;
        let (flash, _) = flash_after(&mut ada, reply).await;
        assert_eq!(flash, "Reason code NSF saved.");
        let codes = seed::reason_codes_now(&app, &tenant).await;
        assert_eq!(codes[0]["label"], "Not sufficient funds");
        assert_eq!(codes[0]["actions"], json!(["return"]));
        assert_eq!(codes[0]["requires_notes"], false);

        // Deactivate, then bring it back.
        let page = ada.get("/console/reason-codes").await;
        let reply = ada.submit(&page.form("deactivate-NSF")).await;
        let (flash, _) = flash_after(&mut ada, reply).await;
        assert_eq!(flash, "Reason code NSF deactivated.");
        assert_eq!(seed::reason_codes_now(&app, &tenant).await[0]["active"], false);
        let page = ada.get("/console/reason-codes").await;
        assert!(page.text_of("reason-codes").contains("inactive"));
        assert!(!page.has("deactivate-NSF"));
        let reply = ada.submit(&page.form("activate-NSF")).await;
        let (flash, _) = flash_after(&mut ada, reply).await;
        assert_eq!(flash, "Reason code NSF reactivated.");
        assert_eq!(seed::reason_codes_now(&app, &tenant).await[0]["active"], true);

        // Reviewers read the list but change nothing.
        let mut rita = Browser::signed_in(&app, "rita@acme.test").await;
        let page = rita.get("/console/reason-codes").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text_of("reason-codes").contains("Not sufficient funds"));
        assert!(!page.has("new-reason-code") && !page.has("edit-NSF-save"), "no forms for what the API would refuse");
        let desk = rita.get("/console/review").await;
        assert!(!desk.body.contains("href=\"/console/reason-codes\""), "not in a reviewer's navigation");
        let csrf = rita.csrf();
        let forged = rita.post("/console/reason-codes/NSF", &[("_csrf".to_owned(), csrf), ("active".to_owned(), "false".to_owned())]).await;
        let (_, error) = flash_after(&mut rita, forged).await;
        assert!(error, "the API refuses a reviewer");
        assert_eq!(seed::reason_codes_now(&app, &tenant).await[0]["active"], true);
    }
}

on_both_backends! {
    async fn the_supervision_page_marks_breached_and_due_soon_cases(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        let rita_id = seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        let rob_id = seed::user(&app, &tenant, "rob@acme.test", "Rob Reviewer", "reviewer").await;
        seed::user(&app, &tenant, "sam@acme.test", "Sam Supervisor", "supervisor").await;
        let now = chrono::Utc::now();
        let late = seed::case(&app, &tenant, "CHQ-LATE", "300.00", "Ann").await;
        let soon = seed::case(&app, &tenant, "CHQ-SOON", "200.00", "Bob").await;
        let fine = seed::case(&app, &tenant, "CHQ-FINE", "100.00", "Cy").await;
        let [late, soon, fine] = [&late, &soon, &fine].map(|c| c["id"].as_str().unwrap().to_owned());
        seed::set_sla_due(&app, &late, now - chrono::Duration::minutes(30)).await;
        seed::set_sla_due(&app, &soon, now + chrono::Duration::minutes(10)).await;
        // Rita holds the late one.
        let (_, login) = app.login(json!({ "email": "rita@acme.test", "password": PASSWORD })).await;
        let (status, claimed) = app.call(Method::POST, &format!("/api/v1/cases/{late}/claim"), login["access_token"].as_str().unwrap(), None).await;
        assert_eq!(status, StatusCode::OK, "{claimed}");

        let mut sam = Browser::signed_in(&app, "sam@acme.test").await;
        let page = sam.get("/console/supervise").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_well_formed("supervision");
        for id in ["queue-overview", "reviewer-stats", "escalations"] {
            assert!(page.has(id), "#{id}");
        }
        let overview = html::by_id(&page.body, "queue-overview").unwrap();
        let range = html::inner_range(&page.body, &overview);
        let row_class = |case_id: &str| {
            html::select(&page.body, |t| t.name == "tr" && t.attr("data-case-id") == Some(case_id) && t.start >= range.start && t.start < range.end)
                .first()
                .map(|t| t.attr("class").unwrap_or_default().to_owned())
                .unwrap_or_else(|| panic!("no row for {case_id}"))
        };
        assert!(row_class(&late).split_whitespace().any(|c| c == "breached"), "{}", row_class(&late));
        assert!(row_class(&soon).split_whitespace().any(|c| c == "due-soon"), "{}", row_class(&soon));
        let plain = row_class(&fine);
        assert!(!plain.contains("breached") && !plain.contains("due-soon"), "{plain}");

        // The held case can be given to someone else.
        let mut form = page.form(&format!("reassign-{late}"));
        form.set("assignee_id", &rob_id);
        let reply = sam.submit(&form).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let page = sam.follow(reply).await;
        assert!(page.flash().is_some_and(|f| f.contains("Rob Reviewer")), "{:?}", page.flash());
        let moved = seed::case_now(&app, &tenant, &late).await;
        assert_eq!(moved["assignee_id"], rob_id.as_str(), "{moved}");
        assert_ne!(moved["assignee_id"], rita_id.as_str());

        // Parked cases leave the queue overview and are listed on their own.
        let rita_token = login["access_token"].as_str().unwrap();
        let until = now + chrono::Duration::days(2);
        for (case, decision) in [(&soon, json!({ "decision": "hold", "reason": "cheque clearing", "hold_until": until })),
                                 (&fine, json!({ "decision": "needs_more_info", "reason": "identity", "notes": "send the payee's ID" }))] {
            let (status, claimed) = app.call(Method::POST, &format!("/api/v1/cases/{case}/claim"), rita_token, None).await;
            assert_eq!(status, StatusCode::OK, "{claimed}");
            let (status, parked) = app.call(Method::POST, &format!("/api/v1/cases/{case}/decision"), rita_token, Some(decision)).await;
            assert_eq!(status, StatusCode::OK, "{parked}");
            assert!(parked["parked_at"].is_string(), "{parked}");
        }
        let page = sam.get("/console/supervise").await;
        page.assert_well_formed("supervision");
        let parked = page.text_of("parked-cases");
        assert!(parked.contains("CHQ-SOON") && parked.contains("Hold until") && parked.contains("CHQ-FINE")
                && parked.contains("Information from the submitter"), "{parked}");
        assert!(!page.text_of("queue-overview").contains("CHQ-SOON"), "no longer in the queue");
    }

    async fn a_task_is_previewed_created_and_run_from_the_console(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "sam@acme.test", "Sam Supervisor", "supervisor").await;
        let mut sam = Browser::signed_in(&app, "sam@acme.test").await;
        let list = sam.get("/console/tasks").await;
        assert_eq!(list.status, StatusCode::OK);
        list.assert_well_formed("tasks");
        assert_eq!(html::by_id(&list.body, "new-task").unwrap().attr("href"), Some("/console/tasks/new"));
        let page = sam.get("/console/tasks/new").await;
        assert_eq!(page.status, StatusCode::OK);
        page.assert_well_formed("new task");
        let payload = json!({ "params": { "office": "Chisinau" }, "pipeline": [
            { "id": "announce", "uses": "events.publish", "with": { "topic": "brief.ready", "payload": { "office": "${params.office}" } } }
        ] });
        let mut form = page.form("preview");
        form.set("title", "Morning brief")
            .set("description", "The morning brief.")
            .set("schedule_kind", "cron")
            .set("schedule_expr", "0 8 * * 1-5")
            .set("timezone", "Europe/Chisinau")
            .set("payload", &payload.to_string());
        let preview = sam.submit(&form).await;
        assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
        preview.assert_well_formed("preview");
        let list_range = html::inner_range(&preview.body, &html::by_id(&preview.body, "fire-times").expect("#fire-times"));
        let times: Vec<chrono::DateTime<chrono::Utc>> = html::select(&preview.body, |t| t.name == "time" && t.start >= list_range.start && t.start < list_range.end)
            .iter()
            .map(|t| t.attr("datetime").unwrap().parse().unwrap())
            .collect();
        let items = html::select(&preview.body, |t| t.name == "li" && t.start >= list_range.start && t.start < list_range.end).len();
        assert!(items >= 3 && times.len() == items, "one time per item: {items} items, {times:?}");
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        for at in &times {
            let local = at.with_timezone(&chrono_tz::Europe::Chisinau);
            assert_eq!(local.format("%H:%M").to_string(), "08:00");
            assert!(!matches!(chrono::Datelike::weekday(&local), chrono::Weekday::Sat | chrono::Weekday::Sun));
        }
        let form = preview.form("create-task");
        assert_eq!(form.get("title"), Some("Morning brief"), "the preview keeps the form");
        assert_eq!(serde_json::from_str::<Value>(form.get("payload").unwrap()).unwrap(), payload);
        let (_, tasks) = app.call(Method::GET, "/api/v1/tasks", &tenant.admin.access_token, None).await;
        assert_eq!(tasks["items"], json!([]), "a preview creates nothing");

        // A bad expression names the field and keeps what was typed.
        let mut bad = form.clone();
        bad.set("schedule_expr", "99 * * * *");
        let refused = sam.submit(&bad).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
        assert!(refused.text_of("form-error").contains("Expression") || refused.text_of("form-error").contains("schedule"), "{}", refused.text_of("form-error"));
        assert_eq!(html::by_id(&refused.body, "schedule_expr").unwrap().attr("aria-invalid"), Some("true"));
        assert_eq!(refused.form("create-task").get("title"), Some("Morning brief"));
        let (_, tasks) = app.call(Method::GET, "/api/v1/tasks", &tenant.admin.access_token, None).await;
        assert_eq!(tasks["items"], json!([]), "nothing was created");

        let reply = sam.submit(&form).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let location = reply.location().unwrap().to_owned();
        let task_id = location.strip_prefix("/console/tasks/").expect("to the task page").to_owned();
        let (status, task) = app.call(Method::GET, &format!("/api/v1/tasks/{task_id}"), &tenant.admin.access_token, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(task["title"], "Morning brief");
        assert_eq!(task["schedule_expr"], "0 8 * * 1-5");
        assert_eq!(task["timezone"], "Europe/Chisinau");
        assert_eq!(task["payload"], payload);
        let page = sam.follow(reply).await;
        page.assert_well_formed("task");
        for id in ["pause", "run-now", "runs"] {
            assert!(page.has(id), "#{id}");
        }
        let disabled = |page: &Reply, id: &str| html::by_id(&page.body, id).unwrap_or_else(|| panic!("#{id}")).has_attr("disabled");
        assert!(!disabled(&page, "pause") && disabled(&page, "resume"), "an active task can be paused, not resumed");

        let reply = sam.submit(&page.form("run-now")).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        let page = sam.follow(reply).await;
        assert!(page.flash().is_some(), "the run is confirmed");
        // The worker runs it; the live fragment shows it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let run_id = loop {
            let fragment = sam.get(&format!("/console/tasks/{task_id}/runs")).await;
            assert_eq!(fragment.status, StatusCode::OK);
            let rows = html::select(&fragment.body, |t| t.name == "tr" && t.has_attr("data-run-id"));
            if let Some(row) = rows.first()
                && html::text(html::inner_html(&fragment.body, row)).contains("succeeded")
            {
                break row.attr("data-run-id").unwrap().to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "no succeeded run: {}", fragment.body);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let run = sam.get(&format!("/console/runs/{run_id}")).await;
        assert_eq!(run.status, StatusCode::OK, "{}", run.body);
        run.assert_well_formed("run");
        let steps = run.text_of("steps");
        assert!(steps.contains("announce") && steps.contains("succeeded"), "{steps}");

        let reply = sam.submit(&page.form("pause")).await;
        let page = sam.follow(reply).await;
        assert!(disabled(&page, "pause") && !disabled(&page, "resume"), "a paused task can be resumed");
        let (_, task) = app.call(Method::GET, &format!("/api/v1/tasks/{task_id}"), &tenant.admin.access_token, None).await;
        assert_eq!(task["status"], "paused");
    }

    async fn a_new_api_key_secret_is_shown_once(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        let mut ada = Browser::admin(&app, &tenant).await;
        let page = ada.get("/console/api-keys").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_well_formed("API keys");
        assert!(page.has("api-keys"));
        assert!(!page.has("new-secret"));
        let mut form = page.form("create-api-key");
        form.set("name", "ledger sync");
        form.fields.push(("scopes".to_owned(), "cases:read".to_owned()));
        form.fields.push(("scopes".to_owned(), "tasks:read".to_owned()));
        let reply = ada.submit(&form).await;
        assert_eq!(reply.status, StatusCode::OK, "shown on the response itself, not after a redirect: {}", reply.body);
        assert_eq!(reply.header("cache-control"), "no-store");
        assert!(reply.set_cookies.iter().all(|c| !c.value().contains("dk_")), "never in a cookie");
        let secret = reply.text_of("new-secret");
        assert!(secret.starts_with("dk_"), "{secret}");
        reply.assert_well_formed("new key");
        assert_eq!(app.call(Method::GET, "/api/v1/cases", &secret, None).await.0, StatusCode::OK, "the key works");
        assert_eq!(app.call(Method::GET, "/api/v1/audit", &secret, None).await.0, StatusCode::FORBIDDEN, "with just its scopes");

        let again = ada.get("/console/api-keys").await;
        assert!(!again.has("new-secret"));
        assert!(!again.body.contains(&secret), "the secret is not shown again");
        let rows = html::select(&again.body, |t| t.name == "tr" && t.has_attr("data-key-id"));
        assert_eq!(rows.len(), 2, "the intake key and the new one");
        let row = rows.iter().find(|r| html::text(html::inner_html(&again.body, r)).contains("ledger sync")).unwrap();
        let row_html = html::inner_html(&again.body, row);
        let revoke = html::form_to(row_html, &format!("/console/api-keys/{}/revoke", row.attr("data-key-id").unwrap())).expect("a revoke form");
        let reply = ada.submit(&revoke).await;
        let page = ada.follow(reply).await;
        assert_eq!(page.flash().as_deref(), Some("API key revoked."));
        assert_eq!(app.call(Method::GET, "/api/v1/cases", &secret, None).await.0, StatusCode::UNAUTHORIZED);
    }
}

on_both_backends! {
    async fn the_event_stream_is_relayed_to_signed_in_users(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "sam@acme.test", "Sam Supervisor", "supervisor").await;
        let (status, task) = app.call(Method::POST, "/api/v1/tasks", &tenant.admin.access_token, Some(json!({ "title": "Ping", "schedule_kind": "manual" }))).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");

        let sam = Browser::signed_in(&app, "sam@acme.test").await;
        let stream = app.client.get(app.url("/console/events?topic=job.")).header("cookie", sam.cookie_header()).send().await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        assert!(stream.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let (status, _) = app.call(Method::POST, &format!("/api/v1/tasks/{}/run_now", task["id"].as_str().unwrap()), &tenant.admin.access_token, None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let event = crate::events::next_event(stream, "change").await;
        assert!(event["topic"].as_str().is_some_and(|t| t.starts_with("job.")), "{event}");

        // Signed out there is no stream (an EventSource gives up on anything but one).
        let mut stranger = Browser::new(&app);
        let reply = stranger.get("/console/events").await;
        assert!(reply.location().is_some_and(|l| l.starts_with("/console/login")), "{}", reply.status);
        assert!(!reply.header("content-type").starts_with("text/event-stream"));
    }
}

on_both_backends! {
    async fn the_policy_editor_validates_simulates_and_saves(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        let mut ada = Browser::admin(&app, &tenant).await;
        let page = ada.get("/console/policy").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_well_formed("policy editor");
        let form = page.form("save");
        let shown: Value = serde_json::from_str(form.get("document").unwrap()).expect("the editor holds JSON");
        let (_, current) = app.call(Method::GET, "/api/v1/policy", &tenant.admin.access_token, None).await;
        assert_eq!(shown, current["document"], "the policy in force is in the editor");

        let mut broken = seed::dual_control_document();
        broken["rules"][0]["when"]["op"] = json!("about");
        let mut validate = page.form("validate");
        validate.set("document", &serde_json::to_string_pretty(&broken).unwrap());
        let reply = ada.submit(&validate).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(reply.text_of("policy-result").contains("/rules/0/when/op"), "the error points at the element: {}", reply.text_of("policy-result"));
        assert!(reply.form("save").get("document").unwrap().contains("\"about\""), "the edited text is kept");
        let mut save_broken = reply.form("save");
        save_broken.set("document", &broken.to_string());
        assert_eq!(ada.submit(&save_broken).await.status, StatusCode::UNPROCESSABLE_ENTITY);
        let (_, current) = app.call(Method::GET, "/api/v1/policy", &tenant.admin.access_token, None).await;
        assert_eq!(current["version"], 0, "nothing was saved");

        let good = seed::dual_control_document();
        let mut simulate = page.form("simulate");
        simulate.set("document", &good.to_string()).set("sample", &json!({ "type": "cheque", "reference": "SIM-1", "amount": "6000.00", "currency": "USD" }).to_string());
        let reply = ada.submit(&simulate).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let result = reply.text_of("policy-result");
        assert!(result.contains("SIM-1") && result.contains("four eyes for large amounts"), "{result}");

        let mut save = page.form("save");
        save.set("document", &good.to_string());
        let reply = ada.submit(&save).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let page = ada.follow(reply).await;
        assert_eq!(page.flash().as_deref(), Some("Policy saved as version 1."));
        let (_, current) = app.call(Method::GET, "/api/v1/policy", &tenant.admin.access_token, None).await;
        assert_eq!(current["version"], 1);
        assert_eq!(current["document"]["rules"][0]["name"], "four eyes for large amounts");
        assert_eq!(seed::case(&app, &tenant, "CHQ-P", "6000.00", "Ann").await["dual_control"], true, "new cases follow it");
    }
}

on_both_backends! {
    async fn the_sign_in_page_says_busy_and_too_many_attempts_plainly(backend) {
        let overrides = [("PASSWORD_HASH_CONCURRENCY", "1"), ("PASSWORD_HASH_QUEUE_SECONDS", "0.001"), ("LOGIN_FAILURES_PER_IP", "1000")];
        let Some(app) = TestApp::spawn_with(backend, docket::app::Role::All, &overrides).await else { return };
        let mut browsers: Vec<Browser> = (0..12).map(|_| Browser::new(&app)).collect();
        let replies = futures_util::future::join_all(browsers.iter_mut().map(|b| b.sign_in("nobody@acme.test", "wrong password!"))).await;
        let statuses: Vec<StatusCode> = replies.iter().map(|r| r.status).collect();
        assert!(statuses.iter().all(|s| [StatusCode::UNAUTHORIZED, StatusCode::SERVICE_UNAVAILABLE].contains(s)), "{statuses:?}");
        let busy = replies.iter().find(|r| r.status == StatusCode::SERVICE_UNAVAILABLE).expect("one slot cannot serve twelve at once");
        assert!(busy.body.contains("Docket is busy signing other people in"), "{}", busy.body);

        let Some(app) = TestApp::spawn_with(backend, docket::app::Role::All, &[("LOGIN_FAILURES_PER_IP", "1")]).await else { return };
        let mut browser = Browser::new(&app);
        assert_eq!(browser.sign_in("nobody@acme.test", "wrong password!").await.status, StatusCode::UNAUTHORIZED);
        let refused = browser.sign_in("nobody@acme.test", "wrong password!").await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.body.contains("Too many failed sign-in attempts from your address"), "{}", refused.body);
    }

    async fn console_pages_count_once_against_their_users_own_budgets(backend) {
        let overrides = [("RATE_LIMIT_PER_MINUTE", "40"), ("LIVE_RATE_LIMIT_PER_MINUTE", "40"), ("API_KEY_RATE_LIMIT_PER_MINUTE", "10")];
        let Some(app) = TestApp::spawn_with(backend, docket::app::Role::All, &overrides).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        seed::user(&app, &tenant, "rob@acme.test", "Rob Reviewer", "reviewer").await;
        seed::case(&app, &tenant, "CHQ-1", "120.50", "Ann Smith").await;
        let mut rita = Browser::signed_in(&app, "rita@acme.test").await;

        // The review desk makes several API calls per page; counted per call, twenty pages would
        // be far over a budget of forty.
        for n in 0..20 {
            let desk = rita.get("/console/review").await;
            assert_eq!(desk.status, StatusCode::OK, "page {n}: {}", desk.body);
        }
        // Live refreshes of the open desk have their own budget: thirty of them leave the desk's.
        for n in 0..30 {
            let request = rita.client.get(app.url("/console/review/queue")).header("x-docket-live", "1");
            let refresh = rita.send(request).await;
            assert_eq!(refresh.status, StatusCode::OK, "refresh {n}: {}", refresh.body);
        }
        // An integration hammers the API with its key until it is refused...
        let (status, created) = app.call(Method::POST, "/api/v1/api-keys", &tenant.admin.access_token, Some(json!({ "name": "bot", "scopes": ["cases:read"] }))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let key = created["secret"].as_str().unwrap().to_owned();
        let mut key_statuses = Vec::new();
        for _ in 0..12 {
            key_statuses.push(app.call(Method::GET, "/api/v1/cases", &key, None).await.0);
        }
        assert!(key_statuses[..10].iter().all(|s| *s == StatusCode::OK), "{key_statuses:?}");
        assert!(key_statuses[10..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{key_statuses:?}");
        // ...and the reviewer's desk is unaffected by it.
        assert_eq!(rita.get("/console/review").await.status, StatusCode::OK);

        // Counted per page, Rita's own budget still runs out, and the console says so.
        let mut refused = None;
        for _ in 0..40 {
            let page = rita.get("/console/review").await;
            if page.status != StatusCode::OK {
                refused = Some(page);
                break;
            }
        }
        let refused = refused.expect("her budget runs out");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.body.contains("Rate limit of 40 requests per minute"), "{}", refused.body);
        // Another reviewer of the same tenant works on.
        let mut rob = Browser::signed_in(&app, "rob@acme.test").await;
        let desk = rob.get("/console/review").await;
        assert_eq!(desk.status, StatusCode::OK, "{}", desk.body);
    }
}

on_both_backends! {
    async fn the_reports_page_shows_decisions_and_sla_and_offers_csv(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        seed::user(&app, &tenant, "sam@acme.test", "Sam Supervisor", "supervisor").await;
        let case = seed::case(&app, &tenant, "CHQ-1", "120.50", "Ann").await;
        let case_id = case["id"].as_str().unwrap();
        let (_, login) = app.login(json!({ "email": "rita@acme.test", "password": PASSWORD })).await;
        let rita_token = login["access_token"].as_str().unwrap();
        for action in ["claim", "decision"] {
            let body = (action == "decision").then(|| json!({ "decision": "approve" }));
            let (status, body) = app.call(Method::POST, &format!("/api/v1/cases/{case_id}/{action}"), rita_token, body).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }

        let mut sam = Browser::signed_in(&app, "sam@acme.test").await;
        let page = sam.get("/console/reports").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_well_formed("reports");
        assert!(page.body.contains("href=\"/console/reports\""), "in the navigation");
        let decisions = page.text_of("decisions");
        assert!(decisions.contains("Rita Reviewer") && decisions.contains("approve"), "{decisions}");
        let sla = page.text_of("sla");
        assert!(sla.contains("default") && sla.contains("100.0 %"), "{sla}");

        // The CSV links download the API's CSV for the same days.
        let link = html::by_id(&page.body, "decisions-csv").unwrap().attr("href").unwrap().to_owned();
        let csv = sam.get(&html::decode(&link)).await;
        assert_eq!(csv.status, StatusCode::OK, "{}", csv.body);
        assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
        assert!(csv.header("content-disposition").starts_with("attachment; filename=\"docket-decisions-"));
        assert!(csv.body.starts_with("reviewer,reviewer_name,action,reason_code,day,count\r\n"), "{}", csv.body);
        assert!(csv.body.contains(",Rita Reviewer,approve,"), "the reviewer by name: {}", csv.body);
        let link = html::by_id(&page.body, "sla-csv").unwrap().attr("href").unwrap().to_owned();
        let csv = sam.get(&html::decode(&link)).await;
        assert!(csv.body.contains("\r\ndefault,normal,1,1,100.0,0,0\r\n"), "{}", csv.body);

        // Other days: nothing decided.
        let page = sam.get("/console/reports?from=2020-01-01&to=2020-01-07").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(!page.has("decisions") && page.body.contains("No decisions in these days."));
        let reply = sam.get("/console/reports?from=2020-01-08&to=2020-01-07").await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        let page = sam.follow(reply).await;
        assert_eq!(page.flash().as_deref(), Some("The first day must not be after the last."));

        // Reviewers are refused, as the API refuses them.
        let mut rita = Browser::signed_in(&app, "rita@acme.test").await;
        let desk = rita.get("/console/review").await;
        assert!(!desk.body.contains("href=\"/console/reports\""));
        let reply = rita.get("/console/reports").await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
        assert_eq!(rita.get("/console/reports/sla.csv").await.status, StatusCode::FORBIDDEN);
    }
}

on_both_backends! {
    async fn a_platform_admin_onboards_a_tenant_in_the_console(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let root = app.sign_in_as("platform", "root@platform.test", Role::Admin, true).await;
        let mut browser = Browser::with_totp(&app, "root@platform.test", root.totp_secret.as_deref().unwrap()).await;
        let page = browser.get("/console/tenants").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_well_formed("tenants");
        assert!(page.body.contains("href=\"/console/tenants\""), "in a platform admin's navigation");

        let mut form = page.form("create-tenant");
        form.set("slug", "globex").set("name", "Globex");
        let reply = browser.submit(&form).await;
        let (flash, error) = flash_after(&mut browser, reply).await;
        assert!(!error, "{flash}");
        assert_eq!(flash, "Tenant globex created. Now give it an admin.");

        // A refused admin keeps what was typed (but not the password), with the reason.
        let page = browser.get("/console/tenants").await;
        assert!(page.text_of("tenants").contains("Globex"));
        let mut form = page.form("create-tenant-admin");
        let globex = form.get("tenant_id").unwrap().to_owned();
        form.set("email", "gina@globex.test").set("name", "Gina G").set("password", "short");
        let reply = browser.submit(&form).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.body);
        assert!(reply.text_of("new-tenant-admin-heading").contains("Admin of a tenant"));
        assert!(reply.body.contains("at least 12 characters"), "{}", reply.body);
        let mut again = reply.form("create-tenant-admin");
        assert_eq!((again.get("email"), again.get("name"), again.get("tenant_id")), (Some("gina@globex.test"), Some("Gina G"), Some(globex.as_str())));
        assert_eq!(again.get("password"), Some(""), "a password is never written back into the page");

        again.set("password", PASSWORD);
        let reply = browser.submit(&again).await;
        let (flash, error) = flash_after(&mut browser, reply).await;
        assert!(!error, "{flash}");
        assert!(flash.starts_with("Admin gina@globex.test created"), "{flash}");
        let (status, login) = app.login(json!({ "email": "gina@globex.test", "password": PASSWORD })).await;
        assert_eq!(status, StatusCode::OK, "{login}");
        assert_eq!(login["mfa_enrolment_required"], true);

        // A tenant admin has no such page and no link to it.
        let tenant = seed::tenant(&app, "acme").await;
        let mut ada = Browser::admin(&app, &tenant).await;
        let reply = ada.get("/console/tenants").await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
        let users = ada.get("/console/users").await;
        assert!(!users.body.contains("href=\"/console/tenants\""), "not in a tenant admin's navigation");
    }
}

on_both_backends! {
    async fn unknown_console_pages_are_html_404s_and_the_api_docs_are_linked(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        let mut rita = Browser::signed_in(&app, "rita@acme.test").await;
        for path in ["/console/nope", "/console/cases/x/y/z", "/console/users/1/2"] {
            let reply = rita.get(path).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {}", reply.body);
            assert!(reply.header("content-type").starts_with("text/html"), "{path}");
            assert!(reply.body.contains("There is no console page at this address."), "{path}: {}", reply.body);
            reply.assert_well_formed(path);
        }
        let desk = rita.get("/console/review").await;
        assert_eq!(html::by_id(&desk.body, "api-docs").and_then(|a| a.attr("href").map(str::to_owned)).as_deref(), Some("/docs"));
        // The API keeps its JSON 404s.
        let (status, body) = app.get_json("/api/v1/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
    }
}

on_both_backends! {
    async fn a_new_admin_is_guided_through_getting_started(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let tenant = seed::tenant(&app, "acme").await;
        let mut ada = Browser::admin(&app, &tenant).await;
        let status_of = |page: &Reply, step: &str| {
            html::by_id(&page.body, &format!("step-{step}")).and_then(|t| t.attr("data-status").map(str::to_owned))
        };
        let page = ada.get("/console/supervise").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_well_formed("getting started");
        assert!(page.text_of("getting-started").contains("1 of 5 steps done"), "{}", page.text_of("getting-started"));
        assert_eq!(status_of(&page, "api-key").as_deref(), Some("done"), "the intake key counts");
        for step in ["users", "reason-codes", "policy", "test-case"] {
            assert_eq!(status_of(&page, step).as_deref(), Some("to_do"), "{step}");
        }

        // The starter reason codes, in one click (a second click adds nothing).
        let reply = ada.submit(&page.form("add-starter-reason-codes")).await;
        let (flash, error) = flash_after(&mut ada, reply).await;
        assert!(!error, "{flash}");
        assert_eq!(flash, "7 reason codes added; edit them on Reason codes.");
        let codes = seed::reason_codes_now(&app, &tenant).await;
        assert_eq!(codes.len(), 7, "{codes:?}");
        assert!(codes.iter().any(|c| c["code"] == "SIGNATURE" && c["requires_notes"] == true));
        let page = ada.get("/console/supervise").await;
        assert_eq!(status_of(&page, "reason-codes").as_deref(), Some("done"));
        assert!(!page.has("add-starter-reason-codes"), "no button for a step that is done");
        let csrf = ada.csrf();
        let reply = ada.post("/console/getting-started/reason-codes", &[("_csrf".to_owned(), csrf)]).await;
        assert_eq!(flash_after(&mut ada, reply).await.0, "0 reason codes added; edit them on Reason codes.");

        // A test case, which a reviewer then finds on the desk.
        let page = ada.get("/console/supervise").await;
        let reply = ada.submit(&page.form("submit-test-case")).await;
        let (flash, error) = flash_after(&mut ada, reply).await;
        assert!(!error && flash.starts_with("Test case TEST-"), "{flash}");
        let rita = seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
        assert!(!rita.is_empty());
        let mut reviewer = Browser::signed_in(&app, "rita@acme.test").await;
        let desk = reviewer.get("/console/review").await;
        assert_eq!(queue_ids(&desk).len(), 1, "the test case is on the desk");

        // With a team and a policy of the tenant's own, every step is done and the panel is gone.
        let page = ada.get("/console/supervise").await;
        assert!(page.text_of("getting-started").contains("4 of 5 steps done"), "{}", page.text_of("getting-started"));
        seed::dual_control_policy(&app, &tenant).await;
        let page = ada.get("/console/supervise").await;
        assert!(!page.has("getting-started"), "{}", page.body);

        // Supervisors never see it.
        seed::user(&app, &tenant, "sam@acme.test", "Sam Supervisor", "supervisor").await;
        let mut sam = Browser::signed_in(&app, "sam@acme.test").await;
        assert!(!sam.get("/console/supervise").await.has("getting-started"));
    }
}
