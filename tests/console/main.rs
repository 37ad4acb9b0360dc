//! The web console end to end in headless Chromium: people signing in, maker and checker under
//! dual control in two browsers, a return with a reason code and a hold, creating and running a task while its page updates live, and a session
//! that ends while a reason is being typed. Data is seeded through the JSON API; the browser only
//! uses the console. With `DOCKET_SCREENSHOTS=1` the main pages are saved to `docs/screenshots/`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; scripts/test.sh installs them): skipped without them, failing when `CI` is set.

#[path = "../support/mod.rs"]
mod support;

mod browser;
mod cheque;
mod seed;

use std::panic::AssertUnwindSafe;

use chrono::Timelike;
use futures_util::FutureExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use browser::Browser;
use support::{Backend, TestApp, totp_code};

/// The scenarios share one chromedriver and the machine's two cores: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Docket on a free port (a real TCP address for the browser), with a worker for task runs.
async fn spawn() -> Option<TestApp> {
    TestApp::spawn(Backend::Sqlite).await
}

/// Opens `count` browser windows (separate profiles: separate people), runs `body`, and closes
/// them whatever happens, so no Chromium outlives a failed test.
async fn with_browsers(app: &TestApp, count: usize, body: impl AsyncFnOnce(&[Browser])) {
    let Some(driver) = browser::chromedriver() else {
        return;
    };
    let mut browsers = Vec::new();
    let outcome = AssertUnwindSafe(async {
        for _ in 0..count {
            browsers.push(Browser::open(driver, &app.base).await);
        }
        body(&browsers).await
    })
    .catch_unwind()
    .await;
    for browser in browsers {
        browser.close().await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

/// A status as people read it: "pending_dual_control" and "Pending dual control" alike.
fn normalised(text: &str) -> String {
    text.to_lowercase().replace(['_', '-'], " ")
}

async fn queue_ids(browser: &Browser) -> Vec<String> {
    let mut ids = Vec::new();
    for row in browser.find_all("#queue tr[data-case-id]").await {
        ids.push(
            row.attr("data-case-id")
                .await
                .expect("attr")
                .unwrap_or_default(),
        );
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_control_takes_two_reviewers_in_two_browsers() {
    let _turn = ONE_AT_A_TIME.lock().await;
    if browser::chromedriver().is_none() {
        return;
    }
    let Some(app) = spawn().await else { return };
    let tenant = seed::tenant(&app, "acme").await;
    seed::dual_control_policy(&app, &tenant).await;
    seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
    seed::user(&app, &tenant, "rob@acme.test", "Rob Reviewer", "reviewer").await;
    let large = seed::case(&app, &tenant, "CHQ-1001", "7500.00", "Ann Smith").await;
    let large_id = id(&large);
    assert_eq!(large["dual_control"], true, "{large}");
    let image = cheque::cheque_png(
        "ANN SMITH",
        "7,500.00",
        "SEVEN THOUSAND FIVE HUNDRED AND 00/100",
        "CHQ-1001",
    );
    seed::attach(
        &app,
        &tenant,
        &large_id,
        "cheque-1001.png",
        "image/png",
        &image,
    )
    .await;
    let small = seed::case(&app, &tenant, "CHQ-1002", "120.50", "Bob Jones").await;
    seed::case(&app, &tenant, "CHQ-1003", "980.00", "Cara Diaz").await;

    with_browsers(&app, 2, async |browsers: &[Browser]| {
        let (rita, rob) = (&browsers[0], &browsers[1]);
        rita.goto("/console/login").await;
        rita.screenshot("login").await;
        rita.sign_in_here("rita@acme.test", None).await;
        assert_eq!(
            rita.path().await,
            "/console/review",
            "reviewers start at the review desk"
        );
        let waiting = queue_ids(rita).await;
        assert!(
            waiting.contains(&large_id) && waiting.contains(&id(&small)),
            "{waiting:?}"
        );
        rita.screenshot("review-desk").await;

        rita.click_and_wait("#next-case").await;
        assert_eq!(
            rita.path().await,
            format!("/console/cases/{large_id}"),
            "the most urgent case comes first"
        );
        assert!(normalised(&rita.text("#case-status").await).contains("in review"));
        assert!(
            rita.text("#dual-control").await.contains("No proposal yet"),
            "dual control is shown"
        );
        rita.wait_until(
            "the cheque image to show",
            "const img = document.querySelector('figure.attachment img[data-zoom]'); \
             return !!img && img.complete && img.naturalWidth === 640",
        )
        .await;
        rita.click("figure.attachment img[data-zoom]").await;
        rita.wait_until(
            "the image to zoom",
            "return document.querySelector('img[data-zoom]').classList.contains('zoomed')",
        )
        .await;
        rita.click("figure.attachment img[data-zoom]").await;
        rita.screenshot_full("case").await;

        rita.fill(
            "#decision-reason",
            "Signature and payee match the account holder.",
        )
        .await;
        rita.click_and_wait("#approve").await;
        assert_eq!(
            rita.path().await,
            "/console/review",
            "back to the desk for the next case"
        );
        let flash = rita.flash().await.unwrap_or_default();
        assert!(
            flash.starts_with("Proposed: approve"),
            "the outcome is confirmed: {flash}"
        );
        rita.goto(&format!("/console/cases/{large_id}")).await;
        assert!(normalised(&rita.text("#case-status").await).contains("pending dual control"));
        let summary = rita.text("#dual-control").await;
        assert!(summary.contains("waiting for a checker"), "{summary}");
        assert!(!rita.exists("#confirm").await, "the maker cannot check");
        assert_eq!(
            seed::case_now(&app, &tenant, &large_id).await["state"],
            "pending_dual_control"
        );

        // A different reviewer, signed in elsewhere, takes it from the queue and sends it back.
        rob.sign_in("rob@acme.test", None).await;
        assert!(
            queue_ids(rob).await.contains(&large_id),
            "waiting for a checker"
        );
        rob.click_and_wait("#next-case").await;
        assert_eq!(rob.path().await, format!("/console/cases/{large_id}"));
        assert!(
            rob.text("#proposal")
                .await
                .contains("Signature and payee match")
        );
        rob.click_and_wait("#send-back").await;
        assert_eq!(rob.path().await, format!("/console/cases/{large_id}"));
        let flash = rob.flash().await.unwrap_or_default();
        assert!(flash.contains("notes"), "sending back needs notes: {flash}");
        rob.fill(
            "#check-notes",
            "Please compare the signature with the card on file.",
        )
        .await;
        rob.click_and_wait("#send-back").await;
        assert_eq!(
            rob.flash().await.as_deref(),
            Some("Sent back: the case is in the queue again.")
        );
        assert_eq!(
            seed::case_now(&app, &tenant, &large_id).await["state"],
            "queued"
        );

        // Rita proposes again; Rob confirms from the case page.
        rita.goto("/console/review").await;
        rita.click_and_wait("#next-case").await;
        assert_eq!(rita.path().await, format!("/console/cases/{large_id}"));
        rita.fill("#decision-reason", "Signature matches the card on file.")
            .await;
        rita.click_and_wait("#approve").await;
        rob.goto(&format!("/console/cases/{large_id}")).await;
        rob.fill("#check-notes", "Agree: verified with the branch.")
            .await;
        rob.click_and_wait("#confirm").await;
        assert_eq!(
            rob.flash().await.as_deref(),
            Some("Confirmed: case approved.")
        );
        rob.goto(&format!("/console/cases/{large_id}")).await;
        assert!(normalised(&rob.text("#case-status").await).contains("approved"));
        let summary = rob.text("#dual-control").await;
        assert!(summary.contains("Confirmed by Rob Reviewer"), "{summary}");
        let decided = seed::case_now(&app, &tenant, &large_id).await;
        assert_eq!(decided["state"], "approved", "{decided}");
        let people: std::collections::HashSet<&str> = decided["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["action"] == "proposed" || h["action"] == "confirmed")
            .filter_map(|h| h["actor"].as_str())
            .collect();
        assert_eq!(people.len(), 2, "maker and checker differ: {decided}");
        let history = rob.text("#history").await;
        assert!(
            history.contains("Signature matches the card") && history.contains("Agree: verified"),
            "{history}"
        );

        // It has left the queue for both.
        rita.goto("/console/review").await;
        let waiting = queue_ids(rita).await;
        assert!(!waiting.contains(&large_id), "{waiting:?}");
        assert!(waiting.contains(&id(&small)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_with_a_reason_code_and_a_hold_until_a_time() {
    let _turn = ONE_AT_A_TIME.lock().await;
    if browser::chromedriver().is_none() {
        return;
    }
    let Some(app) = spawn().await else { return };
    let tenant = seed::tenant(&app, "acme").await;
    seed::reason_codes(&app, &tenant).await;
    seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
    let returned = id(&seed::case(&app, &tenant, "CHQ-4001", "310.00", "Ida Moss").await);
    let held = id(&seed::case(&app, &tenant, "CHQ-4002", "95.00", "Jon Reed").await);

    with_browsers(&app, 1, async |browsers: &[Browser]| {
        let rita = &browsers[0];
        rita.sign_in("rita@acme.test", None).await;
        rita.goto(&format!("/console/cases/{returned}")).await;
        rita.click("#code-NSF").await;
        rita.click_and_wait("#return").await;
        assert_eq!(rita.flash().await.as_deref(), Some("Case returned."));
        let case = seed::case_now(&app, &tenant, &returned).await;
        assert_eq!(case["state"], "returned", "{case}");
        assert_eq!(case["reason_codes"], json!(["NSF"]));

        rita.goto(&format!("/console/cases/{held}")).await;
        rita.click("#code-CLEARING").await;
        // The field takes the browser's time and says so.
        let label = rita.text("label[for=hold-until]").await;
        assert!(label.contains(browser::BROWSER_TIME_ZONE), "{label}");
        let until = (chrono::Utc::now() + chrono::Duration::days(3))
            .with_second(0)
            .and_then(|at| at.with_nanosecond(0))
            .unwrap();
        let typed = until
            .with_timezone(&chrono_tz::Asia::Tokyo)
            .format("%Y-%m-%dT%H:%M")
            .to_string();
        // Typing into a datetime-local field depends on the browser's locale; setting it does not.
        rita.js(
            "document.querySelector('#hold-until').value = arguments[0]; return true;",
            vec![json!(typed)],
        )
        .await;
        rita.click_and_wait("#hold").await;
        let flash = rita.flash().await.unwrap_or_default();
        assert!(flash.starts_with("Case on hold until"), "{flash}");
        let case = seed::case_now(&app, &tenant, &held).await;
        assert_eq!(case["state"], "on_hold", "{case}");
        let stored: chrono::DateTime<chrono::Utc> =
            case["hold_until"].as_str().unwrap().parse().unwrap();
        assert_eq!(stored, until, "typed {typed} in the browser's zone");
        rita.goto(&format!("/console/cases/{held}")).await;
        assert!(rita.text("#parked").await.contains("On hold until"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_created_with_a_preview_and_its_runs_appear_live() {
    let _turn = ONE_AT_A_TIME.lock().await;
    if browser::chromedriver().is_none() {
        return;
    }
    let Some(app) = spawn().await else { return };
    let tenant = seed::tenant(&app, "acme").await;
    seed::user(
        &app,
        &tenant,
        "sam@acme.test",
        "Sam Supervisor",
        "supervisor",
    )
    .await;

    with_browsers(&app, 1, async |browsers: &[Browser]| {
        let sam = &browsers[0];
        sam.sign_in("sam@acme.test", None).await;
        sam.goto("/console/tasks").await;
        assert!(sam.exists("#tasks").await);
        sam.click_and_wait("#new-task").await;
        assert_eq!(sam.path().await, "/console/tasks/new");

        sam.fill("#title", "Morning brief").await;
        sam.fill("#description", "Publishes the morning brief for the Chisinau office.").await;
        sam.select("#schedule_kind", "cron").await;
        sam.fill("#schedule_expr", "0 8 * * 1-5").await;
        if sam.find("#timezone").await.tag_name().await.expect("tag") == "select" {
            sam.select("#timezone", "Europe/Chisinau").await;
        } else {
            sam.fill("#timezone", "Europe/Chisinau").await;
        }
        let payload = json!({ "params": { "office": "Chisinau" }, "pipeline": [
            { "id": "announce", "uses": "events.publish",
              "with": { "topic": "brief.ready", "payload": { "office": "${params.office}" } } }
        ] });
        sam.fill("#payload", &payload.to_string()).await;
        sam.click("#preview").await;
        sam.wait_until("the next fire times", "return document.querySelectorAll('#fire-times li').length > 0").await;
        let times = sam.find_all("#fire-times li time[datetime]").await;
        assert!(!times.is_empty(), "fire times are <time> elements");
        for time in times {
            let at: chrono::DateTime<chrono::Utc> = time.attr("datetime").await.unwrap().unwrap().parse().unwrap();
            let local = at.with_timezone(&chrono_tz::Europe::Chisinau);
            assert_eq!(local.format("%H:%M").to_string(), "08:00", "{at}");
            assert!(!matches!(chrono::Datelike::weekday(&local), chrono::Weekday::Sat | chrono::Weekday::Sun), "{at}");
        }
        assert_eq!(sam.value("#title").await, "Morning brief", "the preview keeps what was typed");
        sam.screenshot("new-task").await;

        sam.click_and_wait("#create-task").await;
        let path = sam.path().await;
        let task_id = path.strip_prefix("/console/tasks/").unwrap_or_else(|| panic!("on the task page: {path}")).to_owned();
        assert!(!task_id.is_empty() && task_id != "new", "{path}");
        let (status, task) = app.call(Method::GET, &format!("/api/v1/tasks/{task_id}"), &tenant.admin.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{task}");
        assert_eq!(task["title"], "Morning brief");
        assert_eq!(task["timezone"], "Europe/Chisinau");
        assert_eq!(task["payload"], payload);
        assert!(sam.exists("#runs").await);
        assert!(sam.find_all("#runs tr[data-run-id]").await.is_empty(), "no runs yet");

        // A run started elsewhere shows up without reloading the page (server-sent events).
        sam.wait_until("the live connection", "return !!document.querySelector('.live.on')").await;
        sam.mark_page().await;
        let (status, job) = app.call(Method::POST, &format!("/api/v1/tasks/{task_id}/run_now"), &tenant.admin.access_token, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        sam.wait_until(
            "the run to appear and succeed",
            "const rows = document.querySelectorAll('#runs tr[data-run-id]'); \
             return rows.length === 1 && rows[0].textContent.toLowerCase().includes('succeeded')",
        )
        .await;
        assert!(sam.still_same_page().await, "updated in place, not reloaded");

        // And the console's own button.
        sam.click_and_wait("#run-now").await;
        assert!(sam.path().await.starts_with(&format!("/console/tasks/{task_id}")));
        sam.wait_until(
            "the second run to succeed",
            "const rows = document.querySelectorAll('#runs tr[data-run-id]'); \
             return rows.length === 2 && Array.from(rows).every(r => r.textContent.toLowerCase().includes('succeeded'))",
        )
        .await;
        sam.screenshot("task").await;
        sam.goto("/console/tasks").await;
        assert_eq!(sam.find_all(&format!("#tasks tr[data-task-id=\"{task_id}\"]")).await.len(), 1);
        sam.screenshot("tasks").await;

        sam.goto(&format!("/console/tasks/{task_id}")).await;
        sam.click_and_wait("#runs tr[data-run-id] a").await;
        assert!(sam.path().await.starts_with("/console/runs/"));
        let steps = sam.text("#steps").await;
        assert!(steps.contains("announce") && steps.to_lowercase().contains("succeeded"), "{steps}");
        sam.screenshot_full("run").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reason_typed_before_the_session_ends_survives_signing_in_again() {
    let _turn = ONE_AT_A_TIME.lock().await;
    if browser::chromedriver().is_none() {
        return;
    }
    let Some(app) = spawn().await else { return };
    let tenant = seed::tenant(&app, "acme").await;
    seed::reason_codes(&app, &tenant).await;
    seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
    let case = seed::case(&app, &tenant, "CHQ-2001", "980.00", "Dan Pop").await;
    let case_id = id(&case);
    let reason = "Payee name differs from the account holder; the branch is asked to confirm.";

    with_browsers(&app, 1, async |browsers: &[Browser]| {
        let rita = &browsers[0];
        rita.sign_in("rita@acme.test", None).await;
        rita.click_and_wait("#next-case").await;
        assert_eq!(rita.path().await, format!("/console/cases/{case_id}"));
        rita.fill("#decision-reason", reason).await;
        rita.click("#code-NSF").await;

        // The session ends (revoked elsewhere) while the reason is being written.
        seed::revoke_session(&app, &rita.cookie("docket_access").await).await;
        rita.click_and_wait("#reject").await;
        let path = rita.path().await;
        assert!(
            path.starts_with("/console/login"),
            "sent to sign in: {path}"
        );
        assert!(rita.flash().await.is_some(), "the page says why");
        assert_eq!(
            seed::case_now(&app, &tenant, &case_id).await["state"],
            "in_review",
            "nothing was decided"
        );

        rita.sign_in_here("rita@acme.test", None).await;
        assert_eq!(
            rita.path().await,
            format!("/console/cases/{case_id}"),
            "back where she was"
        );
        assert_eq!(
            rita.value("#decision-reason").await,
            reason,
            "what she typed is still there"
        );
        assert_eq!(
            rita.js("return document.querySelector('#code-NSF').checked", vec![])
                .await,
            json!(true),
            "and what she ticked"
        );
        rita.click_and_wait("#reject").await;
        assert_eq!(rita.flash().await.as_deref(), Some("Case rejected."));
        let decided = seed::case_now(&app, &tenant, &case_id).await;
        assert_eq!(decided["state"], "rejected");
        assert_eq!(decided["reason_codes"], json!(["NSF"]));
        assert!(
            decided["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["reason"] == reason),
            "{decided}"
        );
        rita.goto(&format!("/console/cases/{case_id}")).await;
        assert!(normalised(&rita.text("#case-status").await).contains("rejected"));
        assert!(rita.text("#history").await.contains(reason));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_and_admins_see_their_pages() {
    let _turn = ONE_AT_A_TIME.lock().await;
    if browser::chromedriver().is_none() {
        return;
    }
    let Some(app) = spawn().await else { return };
    let tenant = seed::tenant(&app, "acme").await;
    seed::dual_control_policy(&app, &tenant).await;
    seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
    seed::user(&app, &tenant, "rob@acme.test", "Rob Reviewer", "reviewer").await;
    seed::user(
        &app,
        &tenant,
        "sam@acme.test",
        "Sam Supervisor",
        "supervisor",
    )
    .await;
    let now = chrono::Utc::now();
    let late = seed::case(&app, &tenant, "CHQ-3001", "6200.00", "Eve Stone").await;
    seed::set_sla_due(&app, &id(&late), now - chrono::Duration::minutes(40)).await;
    let soon = seed::case(&app, &tenant, "CHQ-3002", "310.00", "Finn Marsh").await;
    seed::set_sla_due(&app, &id(&soon), now + chrono::Duration::minutes(10)).await;
    seed::case(&app, &tenant, "CHQ-3003", "45.00", "Gil Hart").await;

    with_browsers(&app, 1, async |browsers: &[Browser]| {
        let ada = &browsers[0];
        ada.goto("/console/login").await;
        ada.sign_in_here(
            &tenant.admin_email,
            Some(&totp_code(tenant.admin_totp_secret(), 1)),
        )
        .await;

        ada.goto("/console/supervise").await;
        for id_ in ["#queue-overview", "#reviewer-stats", "#escalations"] {
            assert!(ada.exists(id_).await, "{id_}");
        }
        let row = |class: &str, case: &Value| {
            format!("#queue-overview tr.{class}[data-case-id=\"{}\"]", id(case))
        };
        assert!(
            ada.exists(&row("breached", &late)).await,
            "breached SLAs are marked"
        );
        assert!(
            ada.exists(&row("due-soon", &soon)).await,
            "SLAs about to run out are marked"
        );
        let red = ada
            .find("#queue-overview tr.breached td")
            .await
            .css_value("background-color")
            .await
            .unwrap();
        let amber = ada
            .find("#queue-overview tr.due-soon td")
            .await
            .css_value("background-color")
            .await
            .unwrap();
        let plain = ada
            .find("#queue-overview tr[data-case-id]:not(.breached):not(.due-soon) td")
            .await
            .css_value("background-color")
            .await
            .unwrap();
        assert!(
            red != plain && amber != plain && red != amber,
            "red {red}, amber {amber}, plain {plain}"
        );
        ada.screenshot("supervision").await;

        ada.goto("/console/policy").await;
        let document = ada.value("#policy-document").await;
        let parsed: Value =
            serde_json::from_str(&document).expect("the editor holds the policy as JSON");
        assert_eq!(parsed["rules"][0]["name"], "four eyes for large amounts");
        ada.click("#validate").await;
        ada.wait_until(
            "the validation result",
            "return !!document.querySelector('.flash, [role=status], [role=alert]')",
        )
        .await;
        ada.screenshot("policy").await;

        ada.goto("/console/reason-codes").await;
        ada.fill("#code-code", "NSF").await;
        ada.fill("#code-label", "Insufficient funds").await;
        ada.click("#new-code-return").await;
        ada.click_and_wait("#create-reason-code").await;
        assert_eq!(ada.flash().await.as_deref(), Some("Reason code NSF added."));
        assert!(
            ada.text("#reason-codes")
                .await
                .contains("Insufficient funds")
        );

        ada.goto("/console/audit").await;
        assert!(
            !ada.find_all("#audit tr").await.is_empty(),
            "audit entries are listed"
        );
        assert!(ada.exists("#export").await);
        ada.screenshot("audit").await;

        ada.goto("/console/users").await;
        let users = ada.text("#users").await;
        for who in ["rita@acme.test", "rob@acme.test", "sam@acme.test"] {
            assert!(users.contains(who), "{who} in {users}");
        }
        assert!(ada.exists("#new-user").await);
        ada.screenshot("users").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_docs_render_from_what_docket_serves() {
    let _turn = ONE_AT_A_TIME.lock().await;
    if browser::chromedriver().is_none() {
        return;
    }
    let Some(app) = spawn().await else { return };
    with_browsers(&app, 1, async |browsers| {
        let reader = &browsers[0];
        // Scripts, styles and data come from Docket alone (images from elsewhere, such as ReDoc's
        // maker's logo, are refused by the docs pages' CSP).
        let loaded =
            "return performance.getEntriesByType('resource').map(e => [e.initiatorType, e.name])";
        let only_docket = "return performance.getEntriesByType('resource')
            .filter(e => e.initiatorType !== 'img')
            .every(e => e.name.startsWith(location.origin) || /^(blob|data):/.test(e.name))";
        for (path, viewer, ready) in [
            (
                "/docs",
                "Swagger UI",
                "return document.querySelectorAll('.opblock').length > 50",
            ),
            (
                "/redoc",
                "ReDoc",
                "return document.querySelectorAll('[data-section-id^=\"operation/\"]').length > 50",
            ),
        ] {
            reader.goto(path).await;
            reader
                .wait_until(&format!("{viewer} to list the operations"), ready)
                .await;
            assert_eq!(
                reader.js(only_docket, vec![]).await,
                json!(true),
                "{viewer}: {}",
                reader.js(loaded, vec![]).await
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_form_keeps_what_was_typed_ticked_and_chosen() {
    let _turn = ONE_AT_A_TIME.lock().await;
    if browser::chromedriver().is_none() {
        return;
    }
    let Some(app) = spawn().await else { return };
    let tenant = seed::tenant(&app, "acme").await;
    seed::reason_codes(&app, &tenant).await;
    seed::user(&app, &tenant, "rita@acme.test", "Rita Reviewer", "reviewer").await;
    let case_id = id(&seed::case(&app, &tenant, "CHQ-5001", "120.00", "Kim Lee").await);
    let checked = |css: &str| format!("return document.querySelector('{css}').checked");

    with_browsers(&app, 2, async |browsers: &[Browser]| {
        let rita = &browsers[0];
        rita.sign_in("rita@acme.test", None).await;
        rita.goto(&format!("/console/cases/{case_id}")).await;
        rita.click_and_wait("#claim").await;
        rita.goto(&format!("/console/cases/{case_id}")).await;
        rita.click("#code-NSF").await;
        rita.click("#code-SIG").await;
        rita.fill("#decision-reason", "Two problems with this cheque.")
            .await;
        rita.js(
            "document.querySelector('#hold-until').value = '2031-05-06T07:08'; return true;",
            vec![],
        )
        .await;
        // SIG needs notes, and there are none: refused, and everything is still there.
        rita.click_and_wait("#reject").await;
        let flash = rita.flash().await.unwrap_or_default();
        assert!(flash.contains("SIG"), "{flash}");
        assert_eq!(rita.path().await, format!("/console/cases/{case_id}"));
        assert_eq!(
            rita.value("#decision-reason").await,
            "Two problems with this cheque."
        );
        assert_eq!(rita.js(&checked("#code-NSF"), vec![]).await, json!(true));
        assert_eq!(rita.js(&checked("#code-SIG"), vec![]).await, json!(true));
        assert_eq!(
            rita.js(&checked("#code-CLEARING"), vec![]).await,
            json!(false)
        );
        assert_eq!(rita.value("#hold-until").await, "2031-05-06T07:08");
        assert_eq!(
            seed::case_now(&app, &tenant, &case_id).await["state"],
            "in_review"
        );
        // With the notes it goes through, and the next visit starts empty.
        rita.fill("#decision-notes", "Signature and amount differ.")
            .await;
        rita.click_and_wait("#reject").await;
        assert_eq!(rita.flash().await.as_deref(), Some("Case rejected."));
        assert_eq!(
            seed::case_now(&app, &tenant, &case_id).await["reason_codes"],
            json!(["NSF", "SIG"])
        );

        let ada = &browsers[1];
        ada.goto("/console/login").await;
        ada.sign_in_here(
            &tenant.admin_email,
            Some(&totp_code(tenant.admin_totp_secret(), 1)),
        )
        .await;
        ada.goto("/console/users").await;
        ada.fill("#user-email", "rita@acme.test").await;
        ada.fill("#user-name", "Rita Again").await;
        ada.select("#user-role", "supervisor").await;
        ada.fill("#user-password", "a long enough password").await;
        ada.click_and_wait("#create-user").await;
        let flash = ada.flash().await.unwrap_or_default();
        assert!(flash.contains("already exists"), "{flash}");
        assert_eq!(ada.value("#user-email").await, "rita@acme.test");
        assert_eq!(ada.value("#user-name").await, "Rita Again");
        assert_eq!(ada.value("#user-role").await, "supervisor");
        assert_eq!(
            ada.value("#user-password").await,
            "",
            "a password is never kept"
        );
    })
    .await;
}
