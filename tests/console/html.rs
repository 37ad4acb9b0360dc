//! Just enough HTML reading for tests of server-rendered pages: start tags with their attributes,
//! an element's text, and the fields a form would submit. The console's markup comes from maud,
//! so it is well formed; this is not a general HTML parser.

// Each test binary that includes this file uses a different subset of it.
#![allow(dead_code)]

/// A start tag: its name, attributes (entities decoded) and where it sits in the document.
#[derive(Debug, Clone)]
pub struct Tag {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    /// Byte offset of `<`.
    pub start: usize,
    /// Byte offset just after `>`.
    pub end: usize,
}

impl Tag {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    pub fn has_class(&self, class: &str) -> bool {
        self.attr("class")
            .is_some_and(|c| c.split_whitespace().any(|c| c == class))
    }
}

pub fn decode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(semi) = rest.find(';').filter(|s| *s <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every start tag of the document, in order (comments, doctype and end tags skipped; the content
/// of `<script>`, `<style>` and `<textarea>` is not parsed for tags).
pub fn tags(html: &str) -> Vec<Tag> {
    let bytes = html.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    while let Some(offset) = html[i..].find('<') {
        let start = i + offset;
        if html[start..].starts_with("<!--") {
            i = html[start..]
                .find("-->")
                .map_or(html.len(), |e| start + e + 3);
            continue;
        }
        let Some(&next) = bytes.get(start + 1) else {
            break;
        };
        if !next.is_ascii_alphabetic() {
            i = start + 1;
            continue;
        }
        let (tag, end) = parse_tag(html, start);
        i = end;
        let raw_text = matches!(tag.name.as_str(), "script" | "style" | "textarea");
        let name = tag.name.clone();
        tags.push(tag);
        if raw_text {
            let close = format!("</{name}");
            i = find_ci(html, i, &close).unwrap_or(html.len());
        }
    }
    tags
}

fn find_ci(html: &str, from: usize, needle: &str) -> Option<usize> {
    html[from..]
        .to_ascii_lowercase()
        .find(&needle.to_ascii_lowercase())
        .map(|at| from + at)
}

fn parse_tag(html: &str, start: usize) -> (Tag, usize) {
    let bytes = html.as_bytes();
    let mut i = start + 1;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-') {
        i += 1;
    }
    let name = html[start + 1..i].to_ascii_lowercase();
    let mut attrs = Vec::new();
    loop {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        if bytes[i] == b'>' {
            i += 1;
            break;
        }
        let name_start = i;
        while i < bytes.len()
            && !matches!(bytes[i], b'=' | b'>' | b'/')
            && !bytes[i].is_ascii_whitespace()
        {
            i += 1;
        }
        let attr_name = html[name_start..i].to_ascii_lowercase();
        let mut value = String::new();
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            match bytes.get(i) {
                Some(&quote @ (b'"' | b'\'')) => {
                    let value_start = i + 1;
                    let value_end = html[value_start..]
                        .find(quote as char)
                        .map_or(html.len(), |e| value_start + e);
                    value = decode(&html[value_start..value_end]);
                    i = (value_end + 1).min(html.len());
                }
                _ => {
                    let value_start = i;
                    while i < bytes.len() && bytes[i] != b'>' && !bytes[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    value = decode(&html[value_start..i]);
                }
            }
        }
        if !attr_name.is_empty() {
            attrs.push((attr_name, value));
        }
    }
    (
        Tag {
            name,
            attrs,
            start,
            end: i,
        },
        i,
    )
}

pub fn by_id(html: &str, id: &str) -> Option<Tag> {
    tags(html).into_iter().find(|t| t.attr("id") == Some(id))
}

/// Tags matching a predicate, e.g. every `tr` with a `data-case-id`.
pub fn select(html: &str, wanted: impl Fn(&Tag) -> bool) -> Vec<Tag> {
    tags(html).into_iter().filter(|t| wanted(t)).collect()
}

const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];

/// The byte range of an element's content (between its start tag and its matching end tag).
pub fn inner_range(html: &str, tag: &Tag) -> std::ops::Range<usize> {
    if VOID.contains(&tag.name.as_str()) {
        return tag.end..tag.end;
    }
    let open = format!("<{}", tag.name);
    let close = format!("</{}", tag.name);
    let mut depth = 1;
    let mut i = tag.end;
    loop {
        let next_close = find_ci(html, i, &close);
        let next_open = find_ci(html, i, &open).filter(|at| {
            // `<tr` must not match `<track`.
            html.as_bytes()
                .get(at + open.len())
                .is_some_and(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/')
        });
        match (next_open, next_close) {
            (Some(o), Some(c)) if o < c => {
                depth += 1;
                i = o + open.len();
            }
            (_, Some(c)) => {
                depth -= 1;
                if depth == 0 {
                    return tag.end..c;
                }
                i = c + close.len();
            }
            (_, None) => return tag.end..html.len(),
        }
    }
}

/// The inner HTML of an element.
pub fn inner_html<'a>(html: &'a str, tag: &Tag) -> &'a str {
    &html[inner_range(html, tag)]
}

/// The text of a fragment: tags dropped, entities decoded, whitespace collapsed.
pub fn text(fragment: &str) -> String {
    let mut out = String::new();
    let mut rest = fragment;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        out.push(' ');
        rest = rest[lt..].find('>').map_or("", |gt| &rest[lt + gt + 1..]);
    }
    out.push_str(rest);
    decode(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text of the element with `id`, if there is one.
pub fn text_of(html: &str, id: &str) -> Option<String> {
    by_id(html, id).map(|tag| text(inner_html(html, &tag)))
}

/// A form as a browser would submit it.
#[derive(Debug, Clone)]
pub struct Form {
    pub action: String,
    pub method: String,
    /// Successful controls in document order (submit buttons excluded).
    pub fields: Vec<(String, String)>,
}

impl Form {
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some(field) => field.1 = value.to_owned(),
            None => self.fields.push((name.to_owned(), value.to_owned())),
        }
        self
    }

    /// Adds one more value under `name`, as a checked checkbox of a group does.
    pub fn add(&mut self, name: &str, value: &str) -> &mut Self {
        self.fields.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Drops `name=value`, as unchecking that checkbox does.
    pub fn remove(&mut self, name: &str, value: &str) -> &mut Self {
        self.fields.retain(|(k, v)| k != name || v != value);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The form that contains the element with `id` (a field or a button), with the fields it would
/// send when that element is the submit button: its own `name=value` is added when it has a name.
pub fn form_with(html: &str, id: &str) -> Option<Form> {
    let all = tags(html);
    let target = all.iter().position(|t| t.attr("id") == Some(id))?;
    let form_tag = all[..=target].iter().rev().find(|t| t.name == "form")?;
    if all[target].start >= inner_range(html, form_tag).end {
        return None;
    }
    Some(read_form(html, &all, form_tag, Some(&all[target])))
}

/// The form posting to `action` (the first, when there are several), submitted by its first button.
pub fn form_to(html: &str, action: &str) -> Option<Form> {
    let all = tags(html);
    let form_tag = all
        .iter()
        .find(|t| t.name == "form" && t.attr("action") == Some(action))?;
    let range = inner_range(html, form_tag);
    let button = all.iter().find(|t| {
        t.start >= range.start
            && t.start < range.end
            && (t.name == "button" || t.attr("type") == Some("submit"))
    });
    Some(read_form(html, &all, form_tag, button))
}

fn read_form(html: &str, all: &[Tag], form_tag: &Tag, submitter: Option<&Tag>) -> Form {
    let range = inner_range(html, form_tag);
    let mut fields = Vec::new();
    for tag in all {
        if tag.start < range.start || tag.start >= range.end {
            continue;
        }
        let Some(name) = tag.attr("name").map(str::to_owned) else {
            continue;
        };
        if tag.has_attr("disabled") {
            continue;
        }
        match tag.name.as_str() {
            "input" => {
                let kind = tag.attr("type").unwrap_or("text").to_ascii_lowercase();
                match kind.as_str() {
                    "submit" | "button" | "image" | "reset" | "file" => {}
                    "checkbox" | "radio" => {
                        if tag.has_attr("checked") {
                            fields.push((name, tag.attr("value").unwrap_or("on").to_owned()));
                        }
                    }
                    _ => fields.push((name, tag.attr("value").unwrap_or_default().to_owned())),
                }
            }
            "textarea" => {
                let content = decode(inner_html(html, tag));
                // A newline right after <textarea> is not part of the value.
                let content = content.strip_prefix('\n').unwrap_or(&content).to_owned();
                fields.push((name, content));
            }
            "select" => {
                let options_range = inner_range(html, tag);
                let options: Vec<&Tag> = all
                    .iter()
                    .filter(|t| {
                        t.name == "option"
                            && t.start >= options_range.start
                            && t.start < options_range.end
                    })
                    .collect();
                let chosen = options
                    .iter()
                    .find(|o| o.has_attr("selected"))
                    .or_else(|| options.first());
                if let Some(option) = chosen {
                    let value = match option.attr("value") {
                        Some(v) => v.to_owned(),
                        None => text(inner_html(html, option)),
                    };
                    fields.push((name, value));
                }
            }
            _ => {}
        }
    }
    let submitter = submitter.filter(|t| t.name == "button" || t.attr("type") == Some("submit"));
    if let Some(button) = submitter
        && let Some(name) = button.attr("name")
    {
        fields.push((
            name.to_owned(),
            button.attr("value").unwrap_or_default().to_owned(),
        ));
    }
    let action = submitter
        .and_then(|b| b.attr("formaction"))
        .or(form_tag.attr("action"))
        .unwrap_or_default()
        .to_owned();
    Form {
        action,
        method: form_tag
            .attr("method")
            .unwrap_or("get")
            .to_ascii_lowercase(),
        fields,
    }
}

/// Whether a page keeps to the console's CSP-friendly rules: no inline scripts, styles or event
/// handlers. Returns what breaks them.
pub fn inline_code(html: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for tag in tags(html) {
        for (name, _) in &tag.attrs {
            if name == "style" || name.starts_with("on") {
                problems.push(format!("<{} {name}=…>", tag.name));
            }
        }
        if tag.name == "style" {
            problems.push("<style> element".to_owned());
        }
        if tag.name == "script"
            && (!tag.has_attr("src") || !inner_html(html, &tag).trim().is_empty())
        {
            problems.push("inline <script>".to_owned());
        }
        if let Some(href) = tag
            .attr("href")
            .filter(|h| h.trim_start().starts_with("javascript:"))
        {
            problems.push(format!("javascript: URL {href}"));
        }
    }
    problems
}

/// Accessibility basics the console promises: every visible field has a label, table headers have
/// a scope, headings do not skip levels. Returns what breaks them.
pub fn accessibility_problems(html: &str) -> Vec<String> {
    let all = tags(html);
    let mut problems = Vec::new();
    let labelled: Vec<&str> = all
        .iter()
        .filter(|t| t.name == "label")
        .filter_map(|t| t.attr("for"))
        .collect();
    for tag in &all {
        let is_field = match tag.name.as_str() {
            "input" => !matches!(
                tag.attr("type").unwrap_or("text"),
                "hidden" | "submit" | "button" | "reset" | "image"
            ),
            "textarea" | "select" => true,
            _ => false,
        };
        if is_field {
            let has_label = tag.attr("id").is_some_and(|id| labelled.contains(&id))
                || tag.has_attr("aria-label")
                || tag.has_attr("aria-labelledby")
                || all.iter().any(|l| {
                    l.name == "label" && {
                        let r = inner_range(html, l);
                        tag.start >= r.start && tag.start < r.end
                    }
                });
            if !has_label {
                problems.push(format!(
                    "<{} name={:?}> has no label",
                    tag.name,
                    tag.attr("name").unwrap_or_default()
                ));
            }
        }
        if tag.name == "th" && !tag.has_attr("scope") {
            problems.push(format!(
                "<th> without scope: {}",
                text(inner_html(html, tag))
            ));
        }
    }
    let mut level = 0;
    for tag in all.iter().filter(|t| {
        t.name.len() == 2 && t.name.starts_with('h') && t.name.as_bytes()[1].is_ascii_digit()
    }) {
        let this = u32::from(tag.name.as_bytes()[1] - b'0');
        if this > level + 1 {
            problems.push(format!(
                "heading <{}> {:?} follows level {level}",
                tag.name,
                text(inner_html(html, tag))
            ));
        }
        level = this;
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_forms_text_and_nesting() {
        let html = r#"<!DOCTYPE html><html><body>
            <h1>Case &amp; co</h1>
            <div id="case-status"><span class="badge">in <b>review</b></span></div>
            <form method="post" action="/console/cases/1/decision">
              <input type="hidden" name="_csrf" value="t&quot;k">
              <textarea id="decision-reason" name="reason">
kept &lt;text&gt;</textarea>
              <select name="kind"><option value="a">A</option><option value="b" selected>B</option></select>
              <input type="checkbox" name="x" value="1"><input type="checkbox" name="y" checked>
              <button id="approve" name="decision" value="approve">Approve</button>
            </form>
            <table><tr data-id="1"><td><table><tr><td>in</td></tr></table></td></tr></table>
            </body></html>"#;
        assert_eq!(text_of(html, "case-status").as_deref(), Some("in review"));
        let form = form_with(html, "approve").unwrap();
        assert_eq!(form.action, "/console/cases/1/decision");
        assert_eq!(form.method, "post");
        assert_eq!(
            form.fields,
            [
                ("_csrf".to_owned(), "t\"k".to_owned()),
                ("reason".to_owned(), "kept <text>".to_owned()),
                ("kind".to_owned(), "b".to_owned()),
                ("y".to_owned(), "on".to_owned()),
                ("decision".to_owned(), "approve".to_owned()),
            ]
        );
        let row = select(html, |t| t.has_attr("data-id")).remove(0);
        assert_eq!(text(inner_html(html, &row)), "in");
        assert!(inline_code(html).is_empty());
        let problems = accessibility_problems(html);
        assert_eq!(
            problems.len(),
            4,
            "textarea, select and two checkboxes: {problems:?}"
        );
    }
}
