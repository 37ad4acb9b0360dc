//! Headless Chromium driven through chromedriver (started once per test binary, on a free port, and
//! tied to this process like the support module's servers), with small helpers for what the
//! console tests do: sign in, fill fields, submit and wait for the next page, wait for live changes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{PASSWORD, free_port, spawn_tied_to_process, unavailable};

/// How long a page, an element or a live change may take.
const PATIENCE: Duration = Duration::from_secs(15);

fn chromium_bin() -> PathBuf {
    std::env::var_os("CHROMIUM_BIN")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn chromedriver_bin() -> PathBuf {
    std::env::var_os("CHROMEDRIVER_BIN")
        .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from)
}

fn screenshots_wanted() -> bool {
    std::env::var("DOCKET_SCREENSHOTS").as_deref() == Ok("1")
}

pub struct Chromedriver {
    port: u16,
    _child: Child,
}

/// The browsers' time zone: UTC+09:00 all year.
pub const BROWSER_TIME_ZONE: &str = "Asia/Tokyo";

fn start_chromedriver() -> Result<Chromedriver, String> {
    for (what, path) in [
        ("Chromium", chromium_bin()),
        ("chromedriver", chromedriver_bin()),
    ] {
        if !path.exists() {
            return Err(format!(
                "{what} not found at {} (install Debian's chromium and chromium-driver, as scripts/test.sh does)",
                path.display()
            ));
        }
    }
    let port = free_port();
    let mut command = Command::new(chromedriver_bin());
    // The browsers run in a zone other than the server's (UTC), without daylight saving, so the
    // tests see times typed in the browser's zone arrive as the right instant.
    command
        .arg(format!("--port={port}"))
        .env("TZ", BROWSER_TIME_ZONE)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn_tied_to_process(command).map_err(|e| format!("chromedriver: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("chromedriver did not listen within 20 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(Chromedriver {
        port,
        _child: child,
    })
}

/// The chromedriver of this test binary, or `None` (after a note) when Chromium is not installed;
/// with `CI` set that is a failure instead.
pub fn chromedriver() -> Option<&'static Chromedriver> {
    static DRIVER: OnceLock<Result<Chromedriver, String>> = OnceLock::new();
    match DRIVER.get_or_init(start_chromedriver) {
        Ok(driver) => Some(driver),
        Err(why) => {
            unavailable("Chromium", why);
            None
        }
    }
}

/// One browser window with its own profile (so its own cookies and session storage).
pub struct Browser {
    pub client: Client,
    pub base: String,
    _profile: TempDir,
}

impl Browser {
    pub async fn open(driver: &Chromedriver, base: &str) -> Self {
        docket::tls::install_crypto_provider();
        let profile = tempfile::Builder::new()
            .prefix("docket-chromium-")
            .tempdir()
            .expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1366,900",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            // Confirmation dialogs are answered by the test, not dismissed by the driver.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": { "binary": chromium_bin(), "args": args },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let client = ClientBuilder::rustls()
            .expect("TLS for the WebDriver client")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a Chromium session");
        Self {
            client,
            base: base.to_owned(),
            _profile: profile,
        }
    }

    pub async fn close(self) {
        if let Err(e) = self.client.close().await {
            eprintln!("closing the browser: {e}");
        }
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
        self.wait_loaded().await;
    }

    /// The path and query of the page shown.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Runs `script` (a function body) and returns its result, answering any dialog in the way.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    async fn try_js(&self, script: &str) -> Result<Value, CmdError> {
        self.client.execute(script, vec![]).await
    }

    async fn wait_loaded(&self) {
        self.wait_until(
            "the page to load",
            "return document.readyState === 'complete'",
        )
        .await;
    }

    /// Waits until `script` returns true. Dialogs (confirmations) are accepted on the way.
    pub async fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.try_js(script).await {
                Ok(Value::Bool(true)) => return,
                Ok(_) => {}
                Err(e) if e.is_unexpected_alert_open() => {
                    let _ = self.client.accept_alert().await;
                }
                // Navigation in progress.
                Err(_) => {}
            }
            if Instant::now() > deadline {
                let path = self
                    .client
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                let source = self.client.source().await.unwrap_or_default();
                panic!("timed out waiting for {what} on {path}:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let source = self.client.source().await.unwrap_or_default();
                panic!("no {css} on {}: {e}\n{source}", url.unwrap_or_default())
            }
        }
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self.find_all(css).await.is_empty()
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    /// The current value of a field.
    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    /// Replaces a field's content by typing (so input events fire, as for a person).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choosing {value} in {css}: {e}"));
    }

    /// Clicks something that leads to another page (a link or a form button) and waits until the
    /// new page has loaded; a confirmation dialog on the way is accepted.
    pub async fn click_and_wait(&self, css: &str) {
        self.js("window.__docketOldPage = true; return true;", vec![])
            .await;
        let target = self.find(css).await;
        match target.click().await {
            Ok(()) => {}
            Err(e) if e.is_unexpected_alert_open() => {}
            Err(e) => panic!("clicking {css}: {e}"),
        }
        self.wait_until(
            &format!("the page after clicking {css}"),
            "return window.__docketOldPage === undefined && document.readyState === 'complete'",
        )
        .await;
    }

    /// Clicks something that stays on the page.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Marks the document, to tell later whether the page was reloaded.
    pub async fn mark_page(&self) {
        self.js("window.__docketSamePage = true; return true;", vec![])
            .await;
    }

    pub async fn still_same_page(&self) -> bool {
        self.js("return window.__docketSamePage === true;", vec![])
            .await
            == Value::Bool(true)
    }

    /// The flash message shown, if any.
    pub async fn flash(&self) -> Option<String> {
        match self.find_all(".flash").await.first() {
            Some(el) => Some(el.text().await.expect("flash text")),
            None => None,
        }
    }

    /// Signs in through the form on the page shown (the sign-in page), with a TOTP code when given.
    pub async fn sign_in_here(&self, email: &str, totp: Option<&str>) {
        self.fill("#email", email).await;
        self.fill("#password", PASSWORD).await;
        self.click_and_wait("button[type=submit]").await;
        if let Some(code) = totp {
            self.fill("#totp_code", code).await;
            self.click_and_wait("button[type=submit]").await;
        }
        assert!(
            !self.path().await.starts_with("/console/login"),
            "signed in as {email}: {:?}",
            self.flash().await
        );
    }

    pub async fn sign_in(&self, email: &str, totp: Option<&str>) {
        self.goto("/console/login").await;
        self.sign_in_here(email, totp).await;
    }

    /// The value of a cookie (HttpOnly ones too: the driver sees them all).
    pub async fn cookie(&self, name: &str) -> String {
        self.client
            .get_named_cookie(name)
            .await
            .unwrap_or_else(|e| panic!("cookie {name}: {e}"))
            .value()
            .to_owned()
    }

    /// Saves a screenshot of the window as `docs/screenshots/<name>.png` when `DOCKET_SCREENSHOTS=1`.
    pub async fn screenshot(&self, name: &str) {
        if screenshots_wanted() {
            self.save_screenshot(name).await;
        }
    }

    /// Like [`Browser::screenshot`], of the whole page: the window grows to the page's height (up to
    /// 2,400 pixels) for the picture.
    pub async fn screenshot_full(&self, name: &str) {
        if !screenshots_wanted() {
            return;
        }
        let (width, height) = self.client.get_window_size().await.expect("window size");
        let page_height = self
            .js("return document.documentElement.scrollHeight;", vec![])
            .await
            .as_u64()
            .unwrap_or(height);
        let chrome = height.saturating_sub(
            self.js("return window.innerHeight;", vec![])
                .await
                .as_u64()
                .unwrap_or(height),
        );
        let tall = (page_height + chrome).clamp(height, 2400);
        self.client
            .set_window_size(width as u32, tall as u32)
            .await
            .expect("resize");
        self.save_screenshot(name).await;
        self.client
            .set_window_size(width as u32, height as u32)
            .await
            .expect("resize back");
    }

    async fn save_screenshot(&self, name: &str) {
        // Images settle before the picture is taken.
        self.wait_until(
            "images to load",
            "return Array.from(document.images).every(i => i.complete)",
        )
        .await;
        self.js("window.scrollTo(0, 0); return true;", vec![]).await;
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }
}
