//! Decision and SLA reports over a seeded data set: decisions made through the API by several
//! reviewers, then spread over several days (and given reason codes) in the database, as time
//! passing would. The expected figures are computed here from the seed list, not from the API.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Login, TestApp};

/// Routes small amounts to the `retail` queue and 1,000 or more to `commercial` at high priority;
/// a confident AI approves on its own. Nobody needs a second reviewer.
fn policy() -> Value {
    json!({
        "defaults": { "priority": "normal", "sla_hours": 4, "dual_control": false, "queue": "retail",
                      "required_role": "reviewer", "auto_decision": "any" },
        "ai": { "enabled": true, "confidence_threshold": 0.9 },
        "rules": [
            { "name": "commercial", "when": { "field": "amount", "op": ">=", "value": "1000" },
              "then": { "queue": "commercial", "priority": "high", "sla_hours": 2 } }
        ]
    })
}

/// Makes cheques wait for an assessment pipeline that approves with the confidence in the
/// subject (only an assessment pipeline's assessment may decide a case); `false` detaches it.
async fn assess_from_subject(app: &TestApp, admin: &Login, attach: bool) {
    if !attach {
        let (status, body) = app
            .call(
                Method::DELETE,
                "/api/v1/case-types/cheque/assessment",
                &admin.access_token,
                None,
            )
            .await;
        assert!(status.is_success(), "{body}");
        return;
    }
    let (status, task) = app
        .call(
            Method::POST,
            "/api/v1/tasks",
            &admin.access_token,
            Some(json!({
                "title": "Assess", "schedule_kind": "manual", "payload": { "pipeline": [{
                    "id": "assess", "uses": "cases.assess",
                    "with": { "case_id": "${params.case.id}", "recommendation": "approve",
                              "confidence": "${params.case.subject.confidence}" } }] }
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/v1/case-types/cheque/assessment",
            &admin.access_token,
            Some(json!({ "task_id": task["id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A decision as seeded: who, what, why and when.
#[derive(Debug, Clone)]
struct Seeded {
    reviewer: String,
    action: &'static str,
    codes: Vec<&'static str>,
    at: DateTime<Utc>,
}

/// A case as seeded, for the SLA report.
#[derive(Debug, Clone)]
struct SeededCase {
    queue: &'static str,
    priority: &'static str,
    /// When a person brought it to a final state.
    decided_at: Option<DateTime<Utc>>,
    met: bool,
    breached_at: Option<DateTime<Utc>>,
    open: bool,
}

struct Seed<'a> {
    app: &'a TestApp,
    clerk: &'a Login,
    /// History rows already given their seeded time.
    placed: HashSet<String>,
    decisions: Vec<Seeded>,
}

impl<'a> Seed<'a> {
    /// Submits a case; with `ai`, the case type's assessment pipeline (see [`assess_from_subject`])
    /// assesses it with that confidence, and this waits until it is routed.
    async fn submit(&self, reference: &str, amount: &str, ai: Option<f64>) -> String {
        let mut body = json!({ "type": "cheque", "reference": reference, "amount": amount, "currency": "USD",
                               "subject": { "payee": "Ann" } });
        if let Some(confidence) = ai {
            body["subject"]["confidence"] = json!(confidence);
        }
        let (status, case) = self
            .app
            .call(
                Method::POST,
                "/api/v1/cases",
                &self.clerk.access_token,
                Some(body),
            )
            .await;
        let expected = if ai.is_some() {
            StatusCode::ACCEPTED
        } else {
            StatusCode::CREATED
        };
        assert_eq!(status, expected, "{case}");
        let id = case["id"].as_str().unwrap().to_owned();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while ai.is_some() {
            let (_, case) = self
                .app
                .call(
                    Method::GET,
                    &format!("/api/v1/cases/{id}"),
                    &self.clerk.access_token,
                    None,
                )
                .await;
            if case["state"] != "assessing" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still assessing: {case}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        id
    }

    /// `who` claims and decides the case through the API; the decision's history row is then
    /// moved to `at` and given `codes` (which today's API cannot record).
    async fn decide(
        &mut self,
        who: &Login,
        case_id: &str,
        action: &'static str,
        codes: &[&'static str],
        at: DateTime<Utc>,
    ) {
        let (status, body) = self
            .app
            .call(
                Method::POST,
                &format!("/api/v1/cases/{case_id}/claim"),
                &who.access_token,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let reason = (action != "approve").then_some("seeded");
        let (status, body) = self
            .app
            .call(
                Method::POST,
                &format!("/api/v1/cases/{case_id}/decision"),
                &who.access_token,
                Some(json!({ "decision": action, "reason": reason })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ids: Vec<String> = docket::with_pool!(&self.app.state.store, pool => {
            sqlx::query_scalar("SELECT id FROM case_history WHERE case_id = $1 AND decision IS NOT NULL")
                .bind(case_id)
                .fetch_all(pool)
                .await
        })
        .unwrap();
        let fresh: Vec<&String> = ids.iter().filter(|id| !self.placed.contains(*id)).collect();
        assert_eq!(fresh.len(), 1, "one decision row per decision: {ids:?}");
        let id = fresh[0].clone();
        let codes_json = (!codes.is_empty()).then(|| json!(codes).to_string());
        docket::with_pool!(&self.app.state.store, pool => {
            sqlx::query("UPDATE case_history SET created_at = $1, reason_codes = $2 WHERE id = $3")
                .bind(at)
                .bind(&codes_json)
                .bind(&id)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .unwrap();
        self.placed.insert(id);
        let mut distinct = codes.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        self.decisions.push(Seeded {
            reviewer: format!("user:{}", who.user_id),
            action,
            codes: distinct,
            at,
        });
    }

    /// Sets the case's SLA times, as the decision and the sweep would have at those moments.
    async fn times(
        &self,
        case_id: &str,
        due: DateTime<Utc>,
        decided: Option<DateTime<Utc>>,
        breached: Option<DateTime<Utc>>,
    ) {
        docket::with_pool!(&self.app.state.store, pool => {
            sqlx::query("UPDATE cases SET sla_due_at = $1, decided_at = COALESCE($2, decided_at), sla_breached_at = $3 WHERE id = $4")
                .bind(due)
                .bind(decided)
                .bind(breached)
                .bind(case_id)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .unwrap();
    }
}

/// Expected decision rows for `group_by`, from the seed list: `(values, count)`, values in
/// `group_by` order ("" for no reason code), sorted as the API sorts.
fn expected_rows(
    decisions: &[Seeded],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    group_by: &[&str],
    tz: Tz,
) -> (Vec<(Vec<String>, i64)>, i64) {
    let mut counts: BTreeMap<Vec<String>, i64> = BTreeMap::new();
    let mut total = 0;
    for d in decisions.iter().filter(|d| d.at >= from && d.at < to) {
        total += 1;
        let codes: Vec<&str> = if group_by.contains(&"reason_code") && !d.codes.is_empty() {
            d.codes.clone()
        } else {
            vec![""]
        };
        for code in codes {
            let key = group_by
                .iter()
                .map(|dim| match *dim {
                    "reviewer" => d.reviewer.clone(),
                    "action" => d.action.to_owned(),
                    "reason_code" => code.to_owned(),
                    "day" => d.at.with_timezone(&tz).date_naive().to_string(),
                    other => panic!("{other}"),
                })
                .collect();
            *counts.entry(key).or_default() += 1;
        }
    }
    (counts.into_iter().collect(), total)
}

/// The API's rows as `(values, count)`, values in `group_by` order (`null` as "").
fn json_rows(report: &Value, group_by: &[&str]) -> Vec<(Vec<String>, i64)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let keys: Vec<&String> = row
                .as_object()
                .unwrap()
                .keys()
                // The reviewer's name goes with the reviewer, not as a dimension of its own.
                .filter(|k| *k != "count" && *k != "reviewer_name")
                .collect();
            assert_eq!(
                keys.len(),
                group_by.len(),
                "only the grouped dimensions: {row}"
            );
            let values = group_by
                .iter()
                .map(|dim| row[*dim].as_str().unwrap_or_default().to_owned())
                .collect();
            (values, row["count"].as_i64().unwrap())
        })
        .collect()
}

fn csv_rows(text: &str, header: &[&str]) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), header);
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

async fn get_text(
    app: &TestApp,
    path: &str,
    token: &str,
    accept: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = app.client.get(app.url(path)).bearer_auth(token);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn window_query(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let encode = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!("from={}&to={}", encode(from), encode(to))
}

on_both_backends! {
    async fn decisions_and_sla_are_counted_from_the_seeded_history(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let sam = app.sign_in("acme", "sam@acme.test", Role::Supervisor).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let rob = app.sign_in("acme", "rob@acme.test", Role::Reviewer).await;
        let carl = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let (status, body) = app.call(Method::PUT, "/api/v1/policy", &admin.access_token, Some(policy())).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // Whole days in the past; day 1 23:30 UTC is day 2 in Paris (CET or CEST alike).
        let today = Utc::now().date_naive();
        let base = Utc.from_utc_datetime(&(today - Duration::days(20)).and_hms_opt(0, 0, 0).unwrap());
        let (from, to) = (base, base + Duration::days(5));
        let t = |day: i64, hour: i64, minute: i64| base + Duration::days(day) + Duration::hours(hour) + Duration::minutes(minute);
        let mut seed = Seed { app: &app, clerk: &carl, placed: HashSet::new(), decisions: Vec::new() };
        let mut cases: Vec<SeededCase> = Vec::new();

        let c1 = seed.submit("C1", "100.00", None).await;
        seed.decide(&rita, &c1, "approve", &["ID_OK"], t(0, 9, 0)).await;
        seed.times(&c1, t(0, 10, 0), Some(t(0, 9, 0)), None).await;
        cases.push(SeededCase { queue: "retail", priority: "normal", decided_at: Some(t(0, 9, 0)), met: true, breached_at: None, open: false });

        let c2 = seed.submit("C2", "200.00", None).await;
        seed.decide(&rita, &c2, "reject", &["NSF", "SIG_MISMATCH"], t(0, 10, 0)).await;
        seed.times(&c2, t(0, 8, 0), Some(t(0, 10, 0)), Some(t(0, 8, 1))).await;
        cases.push(SeededCase { queue: "retail", priority: "normal", decided_at: Some(t(0, 10, 0)), met: false, breached_at: Some(t(0, 8, 1)), open: false });

        let c3 = seed.submit("C3", "300.00", None).await;
        seed.decide(&rob, &c3, "approve", &[], t(1, 23, 30)).await;
        seed.times(&c3, t(2, 1, 0), Some(t(1, 23, 30)), None).await;
        cases.push(SeededCase { queue: "retail", priority: "normal", decided_at: Some(t(1, 23, 30)), met: true, breached_at: None, open: false });

        let c4 = seed.submit("C4", "1500.00", None).await;
        seed.decide(&rob, &c4, "reject", &["NSF"], t(2, 8, 0)).await;
        seed.times(&c4, t(2, 8, 0), Some(t(2, 8, 0)), None).await;
        cases.push(SeededCase { queue: "commercial", priority: "high", decided_at: Some(t(2, 8, 0)), met: true, breached_at: None, open: false });

        // Escalated by Rita, decided by Sam after its deadline.
        let c5 = seed.submit("C5", "2500.00", None).await;
        seed.decide(&rita, &c5, "escalate", &["FRAUD_SUSPECTED"], t(2, 12, 0)).await;
        seed.decide(&sam, &c5, "approve", &["ID_OK"], t(3, 9, 0)).await;
        seed.times(&c5, t(2, 14, 0), Some(t(3, 9, 0)), Some(t(2, 14, 1))).await;
        cases.push(SeededCase { queue: "commercial", priority: "high", decided_at: Some(t(3, 9, 0)), met: false, breached_at: Some(t(2, 14, 1)), open: false });

        // A code given twice counts once.
        let c6 = seed.submit("C6", "400.00", None).await;
        seed.decide(&rob, &c6, "approve", &["ID_OK", "ID_OK"], t(3, 15, 0)).await;
        seed.times(&c6, t(3, 18, 0), Some(t(3, 15, 0)), None).await;
        cases.push(SeededCase { queue: "retail", priority: "normal", decided_at: Some(t(3, 15, 0)), met: true, breached_at: None, open: false });

        // Still open, breached in the window.
        let c7 = seed.submit("C7", "3000.00", None).await;
        seed.times(&c7, t(3, 0, 0), None, Some(t(3, 0, 1))).await;
        cases.push(SeededCase { queue: "commercial", priority: "high", decided_at: None, met: false, breached_at: Some(t(3, 0, 1)), open: true });

        // Approved by the policy: no reviewer's decision, no SLA to meet.
        assess_from_subject(&app, &admin, true).await;
        let c8 = seed.submit("C8", "50.00", Some(0.95)).await;
        assess_from_subject(&app, &admin, false).await;
        let (_, auto) = app.call(Method::GET, &format!("/api/v1/cases/{c8}"), &carl.access_token, None).await;
        assert_eq!(auto["state"], "auto_approved", "{auto}");
        seed.times(&c8, t(1, 4, 0), Some(t(1, 0, 0)), None).await;

        // Decided before the window; open and breached before it (still counts as open_breached).
        let c9 = seed.submit("C9", "700.00", None).await;
        seed.decide(&rita, &c9, "approve", &["ID_OK"], t(-1, 12, 0)).await;
        seed.times(&c9, t(-1, 13, 0), Some(t(-1, 12, 0)), None).await;
        cases.push(SeededCase { queue: "retail", priority: "normal", decided_at: Some(t(-1, 12, 0)), met: true, breached_at: None, open: false });
        let c10 = seed.submit("C10", "800.00", None).await;
        seed.times(&c10, t(-2, 0, 0), None, Some(t(-2, 0, 1))).await;
        cases.push(SeededCase { queue: "retail", priority: "normal", decided_at: None, met: false, breached_at: Some(t(-2, 0, 1)), open: true });
        // Open, on track: nowhere.
        seed.submit("C11", "900.00", None).await;

        // Another tenant's decision in the window is never counted.
        let gil = app.sign_in("globex", "gil@globex.test", Role::Reviewer).await;
        let gus = app.sign_in("globex", "gus@globex.test", Role::Reviewer).await;
        let mut other = Seed { app: &app, clerk: &gil, placed: seed.placed.clone(), decisions: Vec::new() };
        let g1 = other.submit("G1", "100.00", None).await;
        other.decide(&gus, &g1, "approve", &["ID_OK"], t(1, 12, 0)).await;

        let decisions = seed.decisions.clone();
        assert_eq!(decisions.len(), 8);
        let window = window_query(from, to);

        // All four dimensions (the default), days in Paris.
        let all = ["reviewer", "action", "reason_code", "day"];
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let (status, report) = app.call(Method::GET, &format!("/api/v1/reports/decisions?{window}&tz=Europe/Paris"), &sam.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let (expected, total) = expected_rows(&decisions, from, to, &all, paris);
        assert_eq!(total, 7, "C9's decision is before the window");
        assert_eq!(report["total"], total);
        assert_eq!(json_rows(&report, &all), expected, "{report:#}");
        assert_eq!(report["group_by"], json!(all));
        assert_eq!(report["tz"], "Europe/Paris");
        assert_eq!(report["from"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(), from);
        assert_eq!(report["to"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(), to);
        let no_code = report["rows"].as_array().unwrap().iter().find(|r| r["reason_code"].is_null()).expect("a decision without a code");
        assert_eq!(no_code["reviewer"], format!("user:{}", rob.user_id), "{no_code}");
        // Codes split C2's decision in two rows; the sum of the rows exceeds the total.
        let sum: i64 = report["rows"].as_array().unwrap().iter().map(|r| r["count"].as_i64().unwrap()).sum();
        assert_eq!(sum, total + 1);

        // The 23:30 UTC decision is on day 2 in Paris and on day 1 in UTC.
        let day = |n: i64| (base + Duration::days(n)).date_naive().to_string();
        let rob_actor = format!("user:{}", rob.user_id);
        let rob_days = |report: &Value| -> Vec<(String, i64)> {
            report["rows"].as_array().unwrap().iter().filter(|r| r["reviewer"] == rob_actor.as_str())
                .map(|r| (r["day"].as_str().unwrap().to_owned(), r["count"].as_i64().unwrap())).collect()
        };
        let (_, by_day_paris) = app.call(Method::GET, &format!("/api/v1/reports/decisions?{window}&group_by=reviewer,day&tz=Europe/Paris"), &sam.access_token, None).await;
        assert_eq!(rob_days(&by_day_paris), [(day(2), 2), (day(3), 1)], "{by_day_paris:#}");
        let (_, by_day_utc) = app.call(Method::GET, &format!("/api/v1/reports/decisions?{window}&group_by=reviewer,day"), &sam.access_token, None).await;
        assert_eq!(by_day_utc["tz"], "UTC");
        assert_eq!(rob_days(&by_day_utc), [(day(1), 1), (day(2), 1), (day(3), 1)], "{by_day_utc:#}");

        // Reviewer and action only (grouped in SQL): codes do not split decisions.
        let pair = ["reviewer", "action"];
        let (_, report) = app.call(Method::GET, &format!("/api/v1/reports/decisions?{window}&group_by=reviewer,action"), &sam.access_token, None).await;
        assert_eq!(json_rows(&report, &pair), expected_rows(&decisions, from, to, &pair, Tz::UTC).0, "{report:#}");
        assert_eq!(report["total"], total);
        let rows = json_rows(&report, &pair);
        assert!(rows.contains(&(vec![format!("user:{}", rita.user_id), "reject".to_owned()], 1)), "{rows:?}");
        assert!(rows.contains(&(vec![format!("user:{}", sam.user_id), "approve".to_owned()], 1)), "{rows:?}");
        // People read names: the JSON and the CSV name each reviewer next to the id.
        let (status, people) = app.call(Method::GET, "/api/v1/people", &sam.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{people}");
        let name_of = |actor: &str| -> String {
            people["users"].as_array().unwrap().iter().find(|p| p["actor"] == actor)
                .and_then(|p| p["name"].as_str()).unwrap_or_else(|| panic!("{actor} in {people}")).to_owned()
        };
        for row in report["rows"].as_array().unwrap() {
            let actor = row["reviewer"].as_str().unwrap();
            let expected = if actor == "system" { "Docket (policy)".to_owned() } else { name_of(actor) };
            assert_eq!(row["reviewer_name"], expected.as_str(), "{row}");
            assert_ne!(row["reviewer_name"], row["reviewer"]);
        }
        let (_, _, text) = get_text(&app, &format!("/api/v1/reports/decisions?{window}&group_by=reviewer&format=csv"), &sam.access_token, None).await;
        assert!(text.starts_with("reviewer,reviewer_name,count\r\n"), "{text}");
        assert!(text.contains(&format!("user:{},{},", rob.user_id, name_of(&rob_actor))), "{text}");

        // Another order sorts by it.
        let order = ["action", "reason_code"];
        let (_, report) = app.call(Method::GET, &format!("/api/v1/reports/decisions?{window}&group_by=action,reason_code"), &admin.access_token, None).await;
        let (expected, _) = expected_rows(&decisions, from, to, &order, Tz::UTC);
        assert_eq!(json_rows(&report, &order), expected);
        assert_eq!(expected[0], (vec!["approve".to_owned(), String::new()], 1), "no code sorts first");

        // The same as CSV, by parameter and by Accept.
        let csv_path = format!("/api/v1/reports/decisions?{window}&group_by=reason_code,day&tz=Europe/Paris");
        let order = ["reason_code", "day"];
        let (expected, _) = expected_rows(&decisions, from, to, &order, paris);
        let expected_csv: Vec<Vec<String>> = expected.iter().map(|(values, count)| {
            let mut row = values.clone();
            row.push(count.to_string());
            row
        }).collect();
        for (path, accept) in [(format!("{csv_path}&format=csv"), None), (csv_path.clone(), Some("text/csv"))] {
            let (status, headers, text) = get_text(&app, &path, &sam.access_token, accept).await;
            assert_eq!(status, StatusCode::OK, "{text}");
            assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
            let disposition = headers["content-disposition"].to_str().unwrap();
            assert!(disposition.starts_with("attachment; filename=\"docket-decisions-") && disposition.ends_with(".csv\""), "{disposition}");
            assert!(text.ends_with("\r\n") && text.matches("\r\n").count() == text.matches('\n').count(), "CRLF line ends: {text:?}");
            assert_eq!(csv_rows(&text, &["reason_code", "day", "count"]), expected_csv, "{text}");
        }
        let (_, headers, _) = get_text(&app, &format!("{csv_path}&format=json"), &sam.access_token, Some("text/csv")).await;
        assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"), "the parameter wins");

        // SLA per queue and priority.
        let in_window = |at: &Option<DateTime<Utc>>| at.is_some_and(|at| at >= from && at < to);
        let mut expected_sla: Vec<(String, String, [i64; 4])> = Vec::new();
        for (queue, priority) in [("commercial", "high"), ("retail", "normal")] {
            let group: Vec<&SeededCase> = cases.iter().filter(|c| c.queue == queue && c.priority == priority).collect();
            let decided = group.iter().filter(|c| in_window(&c.decided_at)).count() as i64;
            let met = group.iter().filter(|c| in_window(&c.decided_at) && c.met).count() as i64;
            let breaches = group.iter().filter(|c| in_window(&c.breached_at)).count() as i64;
            let open_breached = group.iter().filter(|c| c.open && c.breached_at.is_some()).count() as i64;
            expected_sla.push((queue.to_owned(), priority.to_owned(), [decided, met, breaches, open_breached]));
        }
        assert_eq!(expected_sla[0].2, [2, 1, 2, 1], "commercial: C4 met, C5 late; C5 and C7 breached; C7 open");
        assert_eq!(expected_sla[1].2, [4, 3, 1, 1], "retail: C1, C3, C6 met, C2 late; C2 breached; C10 open");
        let (status, sla) = app.call(Method::GET, &format!("/api/v1/reports/sla?{window}"), &sam.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{sla}");
        let got: Vec<(String, String, [i64; 4])> = sla["rows"].as_array().unwrap().iter().map(|r| (
            r["queue"].as_str().unwrap().to_owned(),
            r["priority"].as_str().unwrap().to_owned(),
            ["decided", "met", "breaches", "open_breached"].map(|k| r[k].as_i64().unwrap()),
        )).collect();
        assert_eq!(got, expected_sla, "{sla:#}");
        assert_eq!(sla["rows"][0]["compliance_pct"], 50.0);
        assert_eq!(sla["rows"][1]["compliance_pct"], 75.0);
        assert_eq!(sla["totals"], json!({ "decided": 6, "met": 4, "compliance_pct": 66.7, "breaches": 3, "open_breached": 2 }));

        let (status, headers, text) = get_text(&app, &format!("/api/v1/reports/sla?{window}&format=csv"), &sam.access_token, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
        assert!(headers["content-disposition"].to_str().unwrap().contains("docket-sla-"));
        assert_eq!(
            csv_rows(&text, &["queue", "priority", "decided", "met", "compliance_pct", "breaches", "open_breached"]),
            [
                ["commercial", "high", "2", "1", "50.0", "2", "1"],
                ["retail", "normal", "4", "3", "75.0", "1", "1"],
                ["(total)", "", "6", "4", "66.7", "3", "2"],
            ]
        );

        // A window with nothing decided: compliance is null, open breaches still show.
        let empty = window_query(base + Duration::days(10), base + Duration::days(11));
        let (_, sla) = app.call(Method::GET, &format!("/api/v1/reports/sla?{empty}"), &sam.access_token, None).await;
        assert_eq!(sla["totals"], json!({ "decided": 0, "met": 0, "compliance_pct": null, "breaches": 0, "open_breached": 2 }));
        let (_, report) = app.call(Method::GET, &format!("/api/v1/reports/decisions?{empty}"), &sam.access_token, None).await;
        assert_eq!(report["rows"], json!([]));
        assert_eq!(report["total"], 0);
    }

    async fn reports_are_for_supervisors_admins_and_keys_with_the_scope(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let vic = app.sign_in("acme", "vic@acme.test", Role::Viewer).await;
        let key = |scopes: Value| {
            let token = admin.access_token.clone();
            let app = &app;
            async move {
                let (status, key) = app.call(Method::POST, "/api/v1/api-keys", &token, Some(json!({ "name": "bi", "scopes": scopes }))).await;
                assert_eq!(status, StatusCode::CREATED, "{key}");
                key["secret"].as_str().unwrap().to_owned()
            }
        };
        let reports_key = key(json!(["reports:read"])).await;
        let cases_key = key(json!(["cases:read"])).await;
        for path in ["/api/v1/reports/decisions", "/api/v1/reports/sla"] {
            for (who, token, expected) in [
                ("admin", admin.access_token.as_str(), StatusCode::OK),
                ("reports key", reports_key.as_str(), StatusCode::OK),
                ("reviewer", rita.access_token.as_str(), StatusCode::FORBIDDEN),
                ("viewer", vic.access_token.as_str(), StatusCode::FORBIDDEN),
                ("cases key", cases_key.as_str(), StatusCode::FORBIDDEN),
            ] {
                let (status, body) = app.call(Method::GET, path, token, None).await;
                assert_eq!(status, expected, "{who} {path}: {body}");
                if expected == StatusCode::FORBIDDEN {
                    assert_eq!(body["error"]["code"], "forbidden", "{body}");
                }
            }
            assert_eq!(app.get(path).await.status(), StatusCode::UNAUTHORIZED);
        }
        // The default window: the last 30 days up to now.
        let (_, report) = app.call(Method::GET, "/api/v1/reports/decisions", &admin.access_token, None).await;
        let from: DateTime<Utc> = report["from"].as_str().unwrap().parse().unwrap();
        let to: DateTime<Utc> = report["to"].as_str().unwrap().parse().unwrap();
        assert_eq!(to - from, Duration::days(30));
        assert!((Utc::now() - to).num_seconds().abs() < 60, "{to}");
        assert_eq!(report["group_by"], json!(["reviewer", "action", "reason_code", "day"]));
    }

    async fn bad_report_parameters_are_refused_with_the_field(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sam = app.sign_in("acme", "sam@acme.test", Role::Supervisor).await;
        for (query, field) in [
            ("from=yesterday", "from"),
            ("to=2026-01-01", "to"),
            ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
            ("from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
            ("from=2024-01-01T00:00:00Z&to=2025-01-02T00:00:00Z", "from"),
            ("group_by=reviewer,queue", "group_by"),
            ("group_by=day,day", "group_by"),
            ("group_by=", "group_by"),
            ("tz=Mars/Olympus_Mons", "tz"),
            ("format=xlsx", "format"),
        ] {
            let (status, body) = app.call(Method::GET, &format!("/api/v1/reports/decisions?{query}"), &sam.access_token, None).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
            assert_eq!(body["error"]["code"], "validation_failed", "{body}");
            assert_eq!(body["error"]["details"]["field"], field, "{query}: {body}");
        }
        for (query, field) in [("to=soon", "to"), ("from=2020-01-01T00:00:00Z&to=2022-01-01T00:00:00Z", "from"), ("format=pdf", "format")] {
            let (status, body) = app.call(Method::GET, &format!("/api/v1/reports/sla?{query}"), &sam.access_token, None).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
            assert_eq!(body["error"]["details"]["field"], field, "{query}: {body}");
        }
        // Exactly 366 days is allowed; an offset is honoured (`+` sent as %2B).
        let (status, body) = app.call(Method::GET, "/api/v1/reports/sla?from=2024-01-01T00:00:00%2B01:00&to=2024-12-31T23:00:00Z", &sam.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["from"], "2023-12-31T23:00:00Z");
    }
}
