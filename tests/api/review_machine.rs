//! The review state machine as a property: random sequences of what two reviewers, two supervisors
//! and the submitter may try on one case (claim, release, every action, maker-checker verdicts,
//! answering a request for information, cancelling, reassigning, and the sweep that ends leases and
//! holds), driven through the HTTP API. After every step the answer (200, 403, 409 or 422) and the
//! case's state, holder, proposal and required role must agree with a small reference model
//! written from the rules in docs/review.md.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use docket::app::Role as ProcessRole;
use docket::auth::Role;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::on_both_backends;
use crate::support::{Login, TestApp};

/// Who acts. Carl submits every case (a reviewer, so he could decide other people's cases).
/// `Holder` stands for whoever holds the case when the step runs (Rita if nobody does), so that
/// generated sequences get past the claim as often as real work does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Rita,
    Rob,
    Sam,
    Sue,
    Carl,
    Holder,
}

impl Who {
    fn is_supervisor(self) -> bool {
        matches!(self, Self::Sam | Self::Sue)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Approve,
    Reject,
    Return,
    Hold,
    Escalate,
    NeedsMoreInfo,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Return => "return",
            Self::Hold => "hold",
            Self::Escalate => "escalate",
            Self::NeedsMoreInfo => "needs_more_info",
        }
    }

    fn final_state(self) -> Option<&'static str> {
        match self {
            Self::Approve => Some("approved"),
            Self::Reject => Some("rejected"),
            Self::Return => Some("returned"),
            Self::Hold | Self::Escalate | Self::NeedsMoreInfo => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Claim(Who),
    Release(Who),
    Decide(Who, Action),
    /// `true` confirms the proposal, `false` sends it back.
    Check(Who, bool),
    Inform(Who),
    Cancel(Who),
    /// The first gives the case to the second, or back to the queue.
    Reassign(Who, Option<Who>),
    /// The scheduler's sweep two hours on: leases have run out, holds have ended.
    Sweep,
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        Just(Who::Rita),
        Just(Who::Rob),
        Just(Who::Sam),
        Just(Who::Sue),
        Just(Who::Carl)
    ]
}

/// Mostly the holder, sometimes anyone.
fn actor() -> impl Strategy<Value = Who> {
    prop_oneof![3 => Just(Who::Holder), 2 => who()]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Approve),
        Just(Action::Reject),
        Just(Action::Return),
        Just(Action::Hold),
        Just(Action::Escalate),
        Just(Action::NeedsMoreInfo)
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => who().prop_map(Step::Claim),
        1 => actor().prop_map(Step::Release),
        4 => (actor(), action()).prop_map(|(who, action)| Step::Decide(who, action)),
        2 => (actor(), any::<bool>()).prop_map(|(who, confirm)| Step::Check(who, confirm)),
        1 => who().prop_map(Step::Inform),
        1 => who().prop_map(Step::Cancel),
        1 => (who(), prop::option::of(who())).prop_map(|(by, to)| Step::Reassign(by, to)),
        1 => Just(Step::Sweep),
    ]
}

/// The case as the rules say it should be.
#[derive(Debug, Clone)]
struct Model {
    state: &'static str,
    holder: Option<Who>,
    /// Set by the policy when the case arrives.
    dual_control: bool,
    /// The maker of the pending proposal (kept once it is confirmed).
    maker: Option<Who>,
    /// The proposed action, shown on the case while it is `pending_dual_control`.
    proposed: Option<Action>,
    /// Where a parked case or a pending proposal goes back to.
    resume: &'static str,
    supervisors_only: bool,
}

/// A refusal the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Forbidden,
    Conflict,
    Invalid,
}

impl Refused {
    fn status(self) -> StatusCode {
        match self {
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Conflict => StatusCode::CONFLICT,
            Self::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

impl Step {
    /// The step with `Who::Holder` replaced by the model's holder.
    fn resolve(self, model: &Model) -> Self {
        let who = |who: Who| match who {
            Who::Holder => model.holder.unwrap_or(Who::Rita),
            named => named,
        };
        match self {
            Self::Claim(w) => Self::Claim(who(w)),
            Self::Release(w) => Self::Release(who(w)),
            Self::Decide(w, action) => Self::Decide(who(w), action),
            Self::Check(w, confirm) => Self::Check(who(w), confirm),
            Self::Inform(w) => Self::Inform(who(w)),
            Self::Cancel(w) => Self::Cancel(who(w)),
            Self::Reassign(by, to) => Self::Reassign(who(by), to.map(who)),
            Self::Sweep => Self::Sweep,
        }
    }
}

impl Model {
    fn new(dual_control: bool) -> Self {
        Self {
            state: "queued",
            holder: None,
            dual_control,
            maker: None,
            proposed: None,
            resume: "queued",
            supervisors_only: false,
        }
    }

    fn is_open(&self) -> bool {
        matches!(
            self.state,
            "queued" | "in_review" | "pending_dual_control" | "escalated"
        )
    }

    fn is_parked(&self) -> bool {
        matches!(self.state, "on_hold" | "needs_more_info")
    }

    /// Why `who` may not take or decide the case: the required role, their own case, or the
    /// proposal they made themselves.
    fn refusal(&self, who: Who) -> Option<Refused> {
        let lacks_role = self.supervisors_only && !who.is_supervisor();
        (lacks_role || who == Who::Carl || self.maker == Some(who)).then_some(Refused::Forbidden)
    }

    fn ensure_holder(&self, who: Who) -> Result<(), Refused> {
        if !self.is_open() || self.holder != Some(who) {
            return Err(Refused::Conflict);
        }
        Ok(())
    }

    fn resume_from(&self) -> &'static str {
        if self.state == "escalated" {
            "escalated"
        } else {
            "queued"
        }
    }

    /// Applies `step`, or says how it is refused (leaving the model as it was).
    fn apply(&mut self, step: Step) -> Result<(), Refused> {
        match step {
            Step::Claim(who) => {
                if !self.is_open() || self.holder.is_some_and(|h| h != who) {
                    return Err(Refused::Conflict);
                }
                if let Some(refused) = self.refusal(who) {
                    return Err(refused);
                }
                if self.state == "queued" {
                    self.state = "in_review";
                }
                self.holder = Some(who);
            }
            Step::Release(who) => {
                self.ensure_holder(who)?;
                if self.state == "in_review" {
                    self.state = "queued";
                }
                self.holder = None;
            }
            Step::Decide(who, action) => {
                self.ensure_holder(who)?;
                if let Some(refused) = self.refusal(who) {
                    return Err(refused);
                }
                if self.state == "pending_dual_control"
                    || (action == Action::Escalate && self.state == "escalated")
                {
                    return Err(Refused::Conflict);
                }
                self.holder = None;
                match (action, action.final_state()) {
                    (Action::Escalate, _) => {
                        self.state = "escalated";
                        self.supervisors_only = true;
                    }
                    (Action::Hold, _) => {
                        self.resume = self.resume_from();
                        self.state = "on_hold";
                    }
                    (Action::NeedsMoreInfo, _) => {
                        self.resume = self.resume_from();
                        self.state = "needs_more_info";
                    }
                    (_, Some(_)) if self.dual_control => {
                        self.resume = self.resume_from();
                        self.state = "pending_dual_control";
                        self.maker = Some(who);
                        self.proposed = Some(action);
                    }
                    (_, Some(decided)) => self.state = decided,
                    (_, None) => unreachable!("every other action is final"),
                }
            }
            Step::Check(who, confirm) => {
                if self.state != "pending_dual_control" {
                    return Err(Refused::Conflict);
                }
                self.ensure_holder(who)?;
                if let Some(refused) = self.refusal(who) {
                    return Err(refused);
                }
                self.holder = None;
                let proposed = self.proposed.take();
                if confirm {
                    self.state = proposed
                        .and_then(Action::final_state)
                        .expect("a pending case holds a final proposal");
                } else {
                    self.state = self.resume;
                    self.maker = None;
                }
            }
            Step::Inform(who) => {
                if who != Who::Carl && !who.is_supervisor() {
                    return Err(Refused::Forbidden);
                }
                if self.state != "needs_more_info" {
                    return Err(Refused::Conflict);
                }
                self.state = self.resume;
            }
            Step::Cancel(who) => {
                if who != Who::Carl && !who.is_supervisor() {
                    return Err(Refused::Forbidden);
                }
                if !self.is_open() && !self.is_parked() {
                    return Err(Refused::Conflict);
                }
                self.state = "cancelled";
                self.holder = None;
                self.proposed = None;
            }
            Step::Reassign(by, to) => {
                if !by.is_supervisor() {
                    return Err(Refused::Forbidden);
                }
                if !self.is_open() {
                    return Err(Refused::Conflict);
                }
                match to {
                    // Nobody to take it from, the holder already, or someone who may not decide it.
                    None if self.holder.is_none() => return Err(Refused::Invalid),
                    Some(to) if self.holder == Some(to) || self.refusal(to).is_some() => {
                        return Err(Refused::Invalid);
                    }
                    Some(to) => {
                        if self.state == "queued" {
                            self.state = "in_review";
                        }
                        self.holder = Some(to);
                    }
                    None => {
                        if self.state == "in_review" {
                            self.state = "queued";
                        }
                        self.holder = None;
                    }
                }
            }
            Step::Sweep => {
                if self.is_open() && self.holder.take().is_some() && self.state == "in_review" {
                    self.state = "queued";
                }
                if self.state == "on_hold" {
                    self.state = self.resume;
                }
            }
        }
        Ok(())
    }
}

struct People {
    rita: Login,
    rob: Login,
    sam: Login,
    sue: Login,
    carl: Login,
}

impl People {
    fn login(&self, who: Who) -> &Login {
        match who {
            Who::Rita => &self.rita,
            Who::Rob => &self.rob,
            Who::Sam => &self.sam,
            Who::Sue => &self.sue,
            Who::Carl => &self.carl,
            Who::Holder => unreachable!("steps are resolved before they run"),
        }
    }

    fn who_is(&self, user_id: &str) -> Option<Who> {
        [Who::Rita, Who::Rob, Who::Sam, Who::Sue, Who::Carl]
            .into_iter()
            .find(|who| self.login(*who).user_id == user_id)
    }
}

/// One request for `step` on case `id`, and its status (the sweep counts as 200).
async fn perform(app: &TestApp, people: &People, id: &str, step: Step) -> StatusCode {
    let (who, path, body) = match step {
        Step::Claim(who) => (who, "claim", None),
        Step::Release(who) => (who, "release", None),
        Step::Decide(who, action) => {
            let mut body = json!({ "decision": action.as_str(), "reason": "checked the cheque" });
            if action == Action::Hold {
                body["hold_until"] = json!(docket::clock::now() + chrono::Duration::hours(1));
            }
            (who, "decision", Some(body))
        }
        Step::Check(who, confirm) => {
            let verdict = if confirm { "approve" } else { "reject" };
            (
                who,
                "check",
                Some(json!({ "verdict": verdict, "notes": "second look" })),
            )
        }
        Step::Inform(who) => (who, "information", Some(json!({ "notes": "ID attached" }))),
        Step::Cancel(who) => (who, "cancel", Some(json!({ "reason": "sent twice" }))),
        Step::Reassign(by, to) => {
            let to = to.map(|to| people.login(to).user_id.clone());
            (
                by,
                "reassign",
                Some(json!({ "assignee_id": to, "reason": "workload" })),
            )
        }
        Step::Sweep => {
            let later = docket::clock::now() + chrono::Duration::hours(2);
            docket::review::sweep(&app.state, later)
                .await
                .expect("sweep");
            return StatusCode::OK;
        }
    };
    let path = format!("/api/v1/cases/{id}/{path}");
    let token = &people.login(who).access_token;
    app.call(Method::POST, &path, token, body).await.0
}

static REFERENCES: AtomicUsize = AtomicUsize::new(0);

/// Every state a case can be in on the review desk, for the coverage check.
const STATES: [&str; 10] = [
    "queued",
    "in_review",
    "pending_dual_control",
    "escalated",
    "on_hold",
    "needs_more_info",
    "approved",
    "rejected",
    "returned",
    "cancelled",
];

/// Submits a case and runs `steps` on it against the model.
async fn run(
    app: &TestApp,
    people: &People,
    reached: &Mutex<BTreeSet<&'static str>>,
    dual_control: bool,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let reference = format!("SM-{}", REFERENCES.fetch_add(1, Ordering::Relaxed));
    let amount = if dual_control { "5000.00" } else { "120.00" };
    let (status, case) = app
        .call(
            Method::POST,
            "/api/v1/cases",
            &people.carl.access_token,
            Some(json!({ "type": "cheque", "reference": reference, "amount": amount, "currency": "USD" })),
        )
        .await;
    prop_assert_eq!(status, StatusCode::CREATED, "{}", case);
    prop_assert_eq!(&case["dual_control"], &json!(dual_control));
    let id = case["id"].as_str().unwrap_or_default().to_owned();
    let mut model = Model::new(dual_control);
    for (i, step) in steps.iter().enumerate() {
        let step = &step.resolve(&model);
        let expected = model.clone().apply(*step);
        let status = perform(app, people, &id, *step).await;
        let want = expected.map_or_else(Refused::status, |()| StatusCode::OK);
        prop_assert_eq!(
            status,
            want,
            "step {} {:?} in state {} (model {:?})",
            i,
            step,
            model.state,
            model
        );
        if expected.is_ok() {
            model.apply(*step).ok();
            reached
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(model.state);
        }
        let (_, now) = app
            .call(
                Method::GET,
                &format!("/api/v1/cases/{id}"),
                &people.sam.access_token,
                None,
            )
            .await;
        let holder = now["assignee_id"]
            .as_str()
            .and_then(|user| people.who_is(user));
        prop_assert_eq!(
            now["state"].as_str(),
            Some(model.state),
            "after step {} {:?}: {}",
            i,
            step,
            now
        );
        prop_assert_eq!(holder, model.holder, "holder after step {} {:?}", i, step);
        prop_assert_eq!(
            now["proposal"]["action"].as_str(),
            model.proposed.map(Action::as_str),
            "proposal after step {} {:?}",
            i,
            step
        );
        let required = if model.supervisors_only {
            "supervisor"
        } else {
            "reviewer"
        };
        prop_assert_eq!(now["required_role"].as_str(), Some(required));
    }
    Ok(())
}

on_both_backends! {
    async fn random_sequences_follow_the_review_rules(backend) {
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::Api, &[("RATE_LIMIT_PER_MINUTE", "1000000")]).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let people = People {
            rita: app.sign_in("acme", "rita@acme.test", Role::Reviewer).await,
            rob: app.sign_in("acme", "rob@acme.test", Role::Reviewer).await,
            sam: app.sign_in("acme", "sam@acme.test", Role::Supervisor).await,
            sue: app.sign_in("acme", "sue@acme.test", Role::Supervisor).await,
            carl: app.sign_in("acme", "carl@acme.test", Role::Reviewer).await,
        };
        let policy = json!({ "rules": [{ "name": "large cheques", "when": { "field": "amount", "op": ">", "value": "1000" },
                                          "then": { "dual_control": true } }] });
        let (status, body) = app.call(Method::PUT, "/api/v1/policy", &admin.access_token, Some(policy)).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // The same sequences every run, so the coverage check below holds; PROPTEST_CASES=1000 for
        // a deeper run.
        let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64);
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        let strategy = (any::<bool>(), prop::collection::vec(step(), 1..16));
        let handle = tokio::runtime::Handle::current();
        let reached = Mutex::new(BTreeSet::new());
        let outcome = tokio::task::block_in_place(|| {
            runner.run(&strategy, |(dual_control, steps)| handle.block_on(run(&app, &people, &reached, dual_control, &steps)))
        });
        if let Err(failure) = outcome {
            panic!("{failure}");
        }
        let reached = reached.into_inner().unwrap_or_else(|e| e.into_inner());
        let missed: Vec<&str> = STATES.into_iter().filter(|s| !reached.contains(s)).collect();
        assert!(missed.is_empty(), "the sequences never reached {missed:?}");
    }
}

#[test]
fn the_model_needs_two_people_under_dual_control() {
    let mut model = Model::new(true);
    for step in [
        Step::Claim(Who::Rita),
        Step::Decide(Who::Rita, Action::Approve),
    ] {
        model.apply(step).expect("allowed");
    }
    assert_eq!(model.state, "pending_dual_control");
    assert_eq!(model.apply(Step::Claim(Who::Rita)), Err(Refused::Forbidden));
    model.apply(Step::Claim(Who::Rob)).expect("a second person");
    model.apply(Step::Check(Who::Rob, true)).expect("confirmed");
    assert_eq!((model.state, model.proposed), ("approved", None));
}
