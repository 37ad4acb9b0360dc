//! Policy documents: JSON → `Policy::parse` (validation); every accepted policy must round-trip
//! through `to_document` and evaluate a few fixed cases without panicking, with flags unique.
#![no_main]

use docket_rules::policy::engine::{AiAssessment, CaseFacts, Policy, Recommendation};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(document) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(&document) else {
        return;
    };
    let again = Policy::parse(&policy.to_document()).expect("to_document must parse again");
    assert_eq!(again, policy, "to_document must round-trip");

    // Numbers, zero, text and absence where computed fields such as `amount / subject.avg` look.
    let subject = json!({"a": {"b": [1, "x", null]}, "amount": "12.5", "tags": ["x", "y"],
                         "avg": 0, "tenure_days": 12, "max": "1e3"});
    let ai = AiAssessment {
        recommendation: Recommendation::Approve,
        confidence: 0.9,
        reasons: vec![],
        summary: None,
        factors: None,
        citations: None,
    };
    for amount in [0i64, 4999, 5000, 10_000, -3] {
        for (ai, advisory_ai) in [(None, false), (Some(&ai), false), (Some(&ai), true)] {
            let outcome = policy.evaluate(&CaseFacts {
                case_type: "payment",
                reference: "INV-1",
                amount: amount.into(),
                currency: "EUR",
                subject: &subject,
                ai,
                advisory_ai,
            });
            for (i, flag) in outcome.flags.iter().enumerate() {
                assert!(!outcome.flags[..i].contains(flag), "flags repeat");
            }
        }
    }
});
