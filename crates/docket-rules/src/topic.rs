//! Event topic names, shared by events, schedules and the publish tool.

/// Topic names: 1-200 letters, digits and `. _ - : /`.
pub fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 200
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
}
