//! Pipeline `${…}` templates: the expression parser on raw text, and the string splitter /
//! validator (`expressions`) on a JSON string holding the same text.
#![no_main]

use docket_rules::template;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = template::parse(text);
    let _ = template::expressions(&Value::String(text.to_owned()));
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        let _ = template::expressions(&value);
    }
});
