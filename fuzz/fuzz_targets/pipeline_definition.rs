//! Pipeline definitions as a task payload carries them, `if` conditions included: validation
//! must refuse or accept any JSON without panicking or overflowing the stack, and a condition it
//! accepts must evaluate.
#![no_main]

use std::sync::OnceLock;

use docket::config::Config;
use docket::pipeline::tools::Tools;
use docket::pipeline::Definition;
use docket_rules::condition;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let config = Config::from_lookup(|_| None).expect("the default configuration is valid");
        Tools::builtin(&config)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Raw text as the `if` of an otherwise valid step, so the fuzzer need not find JSON first.
    let step = json!({ "pipeline": [
        { "id": "a", "uses": "events.publish", "if": text, "with": { "topic": "t" } }
    ] });
    let _ = Definition::from_payload(&step, tools(), &[]);
    if let Ok(expression) = condition::compile(text) {
        let _ = expression.search(json!({ "params": { "a": [1, {"b": true}] }, "steps": {}, "run": {} }));
    }
    if let Ok(payload) = serde_json::from_str::<Value>(text) {
        let _ = Definition::from_payload(&payload, tools(), &["HOME".to_owned()]);
    }
});
