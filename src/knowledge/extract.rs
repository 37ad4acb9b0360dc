//! Text extraction from uploaded document bytes: plain text, Markdown, HTML and PDF.
//!
//! Markdown is passed through untouched (its structure drives chunking), HTML is rendered to
//! Markdown-ish text (`#` headings, `*` list items) and PDF text is pulled out with `pdf-extract`
//! and then cleaned up: page breaks become paragraph breaks, hard-wrapped lines are joined and
//! words hyphenated across a line break are glued back together.
//!
//! Extraction is bounded ([`Limits`]): a document that would need more memory or time than the
//! limits allow is refused with [`ExtractError::Limit`] or [`ExtractError::Timeout`], which are
//! permanent: trying again cannot succeed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use docket_rules::document::Format;

use super::pdf_guard;

/// What one extraction may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes one PDF stream may decode to (each filter of a chain is checked).
    pub max_stream_bytes: usize,
    /// Bytes all of a PDF's streams may decode to together, and a page may draw.
    pub max_document_bytes: usize,
    /// Bytes of extracted text, for every format.
    pub max_text_bytes: usize,
    pub max_pages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stream_bytes: 64 * 1024 * 1024,
            max_document_bytes: 256 * 1024 * 1024,
            max_text_bytes: 32 * 1024 * 1024,
            max_pages: 2_000,
        }
    }
}

/// Elements nested deeper than this are refused: the HTML parser slows down with every level
/// (quadratically in all), and the renderer's size estimate recurses over the tree.
pub const MAX_HTML_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("not valid UTF-8 text")]
    NotUtf8,
    #[error("the PDF has no extractable text (scanned images?)")]
    PdfNoText,
    #[error("could not read the PDF: {0}")]
    Pdf(String),
    #[error("could not convert the HTML: {0}")]
    Html(String),
    #[error("refused: {0}")]
    Limit(String),
    #[error("refused: extraction took longer than EXTRACT_TIMEOUT_SECONDS allows")]
    Timeout,
}

/// Lines are never wrapped by the HTML renderer: chunking does its own splitting.
const HTML_WIDTH: usize = 100_000;

/// Extracts the text of a document.
///
/// Returns the text and the format that governs its chunking: `Markdown` for Markdown and HTML
/// (rendered to Markdown-ish text), `Text` for plain text and PDF. A leading UTF-8 byte order
/// mark is dropped. Plain text and Markdown must be valid UTF-8; HTML is decoded leniently
/// (invalid sequences become U+FFFD) since the HTML parser does that anyway. Empty text and
/// Markdown are returned as empty strings (they simply produce no chunks); a PDF without text is
/// an error because it is almost always a scan.
///
/// Work stops with [`ExtractError::Timeout`] soon after `deadline` (checks run between PDF
/// pages and objects), so a caller that gave up waiting is not left with a busy thread.
pub fn extract(
    format: Format,
    bytes: &[u8],
    limits: &Limits,
    deadline: Instant,
) -> Result<(String, Format), ExtractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let (text, structure) = match format {
        Format::Text => (utf8(bytes, limits)?, Format::Text),
        Format::Markdown => (utf8(bytes, limits)?, Format::Markdown),
        Format::Html => (html_to_text(bytes, limits, deadline)?, Format::Markdown),
        Format::Pdf => (pdf_to_text(bytes, limits, deadline)?, Format::Text),
    };
    check_text(text.len(), limits)?;
    Ok((text, structure))
}

fn check_text(bytes: usize, limits: &Limits) -> Result<(), ExtractError> {
    if bytes > limits.max_text_bytes {
        return Err(ExtractError::Limit(format!(
            "the document has more than {} MiB of text (EXTRACT_MAX_TEXT_BYTES)",
            limits.max_text_bytes / (1024 * 1024)
        )));
    }
    Ok(())
}

fn utf8(bytes: &[u8], limits: &Limits) -> Result<String, ExtractError> {
    check_text(bytes.len(), limits)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| ExtractError::NotUtf8)
}

fn html_to_text(bytes: &[u8], limits: &Limits, deadline: Instant) -> Result<String, ExtractError> {
    // Plain decorator: `#` headings, `*` list items, `**strong**`; script and style elements are
    // skipped by the renderer. Link footnotes (`[1]: https://…`) would only add noise to chunks.
    // Tables are rendered raw, one cell after another: laid out, every row is padded to the width
    // of the widest cell, so a 200 KB table with one long cell rendered to 400 MB.
    let config = || {
        html2text::config::plain()
            .link_footnotes(false)
            .raw_mode(true)
            .allow_width_overflow()
    };
    let rendered = catch_panic(|| {
        let dom = parse_html(bytes, deadline)?;
        check_html_depth(&dom)?;
        let tree = config().dom_to_render_tree(&dom)?;
        config()
            .render_to_string(tree, HTML_WIDTH)
            .map_err(Into::into)
    })
    .map_err(|reason| ExtractError::Html(format!("the converter crashed ({reason})")))?
    .map_err(|error| match error {
        HtmlError::Limit(error) => error,
        HtmlError::Convert(error) => ExtractError::Html(error.to_string()),
    })?;
    check_text(rendered.len(), limits)?;
    let mut text = String::with_capacity(rendered.len());
    for line in rendered.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    Ok(collapse_blank_lines(&text).trim().to_string())
}

enum HtmlError {
    Limit(ExtractError),
    Convert(html2text::Error),
}

impl From<html2text::Error> for HtmlError {
    fn from(error: html2text::Error) -> Self {
        HtmlError::Convert(error)
    }
}

/// Bytes the HTML parser takes at a time; between pieces the depth so far and the deadline are
/// checked. The parser's cost per element grows with the number of open elements (nesting
/// 50,000 `<div>`s takes 90 s in a debug build), so depth must be caught while parsing.
const HTML_PIECE: usize = 4096;

/// Parses as `html2text`'s `parse_html` does (scripting off), a piece at a time. The open
/// elements are always the last-child path from the root, so that path's length is the depth.
fn parse_html(bytes: &[u8], deadline: Instant) -> Result<html2text::RcDom, HtmlError> {
    use html5ever::tendril::{ByteTendril, TendrilSink};
    let options = html5ever::ParseOpts {
        tree_builder: html5ever::tree_builder::TreeBuilderOpts {
            scripting_enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let dom = html2text::RcDom::default();
    let root = dom.document.clone();
    let mut parser = html5ever::parse_document(dom, options).from_utf8();
    for piece in bytes.chunks(HTML_PIECE) {
        parser.process(ByteTendril::from_slice(piece));
        if Instant::now() > deadline {
            return Err(HtmlError::Limit(ExtractError::Timeout));
        }
        let mut depth = 0;
        let mut node = root.clone();
        loop {
            let last = node.children.borrow().last().cloned();
            let Some(last) = last else { break };
            depth += 1;
            if depth > MAX_HTML_DEPTH {
                return Err(too_deep());
            }
            node = last;
        }
    }
    Ok(parser.finish())
}

fn too_deep() -> HtmlError {
    HtmlError::Limit(ExtractError::Limit(format!(
        "the HTML nests elements more than {MAX_HTML_DEPTH} deep"
    )))
}

/// Walks the parsed tree without recursion and refuses it when it is nested too deeply.
fn check_html_depth(dom: &html2text::RcDom) -> Result<(), HtmlError> {
    let mut stack = vec![(dom.document.clone(), 0usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_HTML_DEPTH {
            return Err(too_deep());
        }
        for child in node.children.borrow().iter() {
            stack.push((child.clone(), depth + 1));
        }
    }
    Ok(())
}

/// At most one blank line in a row.
fn collapse_blank_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn pdf_to_text(bytes: &[u8], limits: &Limits, deadline: Instant) -> Result<String, ExtractError> {
    // pdf-extract (and lopdf below it) can panic on malformed files; a bad upload must become an
    // error, not a crashed worker. The default panic hook still logs the panic to stderr.
    let pages = catch_panic(|| pdf_pages(bytes, limits, deadline))
        .map_err(|reason| ExtractError::Pdf(format!("the parser crashed ({reason})")))??;
    let text = clean_pdf_text(&pages.join("\u{c}"));
    if text.chars().any(char::is_alphanumeric) {
        Ok(text)
    } else {
        Err(ExtractError::PdfNoText)
    }
}

/// Runs third-party parsing code, turning a panic into its message.
fn catch_panic<T>(parse: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(parse)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|message| (*message).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown error".to_string())
    })
}

/// The text of each page. This is what `pdf_extract::extract_text_from_mem` does, except that it
/// keeps pages apart: the whole-document call runs the pages together without any separator
/// when the last line of one page sits at the same height as the first line of the next.
///
/// The streams are measured first ([`pdf_guard::inspect`]), so nothing lopdf decodes afterwards
/// can exceed the limits; every page is checked before it is drawn.
fn pdf_pages(
    bytes: &[u8],
    limits: &Limits,
    deadline: Instant,
) -> Result<Vec<String>, ExtractError> {
    let inspection = pdf_guard::inspect(bytes, limits, deadline)?;
    let doc = pdf_extract::Document::load_mem(bytes)
        .map_err(|error| ExtractError::Pdf(error.to_string()))?;
    pdf_guard::check_document(&doc, limits)?;
    let mut pages = Vec::new();
    let mut text = BoundedText {
        text: Vec::new(),
        remaining: limits.max_text_bytes,
    };
    for (page_num, page_id) in doc.get_pages() {
        if Instant::now() > deadline {
            return Err(ExtractError::Timeout);
        }
        pdf_guard::check_page(&doc, &inspection, page_id, limits, deadline)?;
        let drawn = {
            let writer: &mut dyn std::io::Write = &mut text;
            let mut output = pdf_extract::PlainTextOutput::new(writer);
            pdf_extract::output_doc_page(&doc, &mut output, page_num)
        };
        if text.remaining == 0 {
            return Err(ExtractError::Limit(format!(
                "the document has more than {} MiB of text (EXTRACT_MAX_TEXT_BYTES)",
                limits.max_text_bytes / (1024 * 1024)
            )));
        }
        drawn.map_err(|error| ExtractError::Pdf(format!("page {page_num}: {error}")))?;
        pages.push(String::from_utf8_lossy(&text.text).into_owned());
        text.text.clear();
    }
    Ok(pages)
}

/// Text output that stops accepting writes (an error for pdf-extract, which then stops the
/// page) once the document's text budget is spent; `remaining` is then zero.
struct BoundedText {
    text: Vec<u8>,
    remaining: usize,
}

impl std::io::Write for BoundedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.remaining {
            self.remaining = 0;
            return Err(std::io::Error::other("the text limit is reached"));
        }
        self.remaining -= buf.len();
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Tidies text pulled out of a PDF.
///
/// - CRLF/CR become LF, form feeds (page breaks) become paragraph breaks, other control
///   characters are dropped and runs of spaces/tabs collapse to one space.
/// - Blank lines separate paragraphs; within a paragraph the hard-wrapped lines are joined with a
///   space, except that a line starting with a list marker (`•`, `-`, `*`, `1.`, `a)` …) stays on
///   its own line.
/// - A line ending in `letter-` followed by a line starting with a lowercase letter is taken as a
///   word hyphenated across the break and glued back (`exam-` + `ple` → `example`). Genuine
///   compounds broken at their hyphen (`well-` + `known`) lose the hyphen; that is the usual
///   trade-off and harmless for search.
fn clean_pdf_text(raw: &str) -> String {
    let normalized = raw
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\u{c}', "\n\n");
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current = String::new();
    for raw_line in normalized.split('\n') {
        let line = tidy_line(raw_line);
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            continue;
        }
        if current.is_empty() {
            current = line;
        } else if starts_list_item(&line) {
            current.push('\n');
            current.push_str(&line);
        } else if ends_with_hyphenated_word(&current) && starts_lowercase(&line) {
            current.pop();
            current.push_str(&line);
        } else {
            current.push(' ');
            current.push_str(&line);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs.join("\n\n")
}

/// Drops control characters, collapses horizontal whitespace and trims.
fn tidy_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut pending_space = false;
    for c in line.chars() {
        if c.is_whitespace() {
            pending_space = true;
        } else if c.is_control() {
            continue;
        } else {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
    }
    out
}

fn starts_list_item(line: &str) -> bool {
    let mut chars = line.chars();
    match chars.next() {
        Some('•' | '◦' | '▪' | '‣' | '·' | '–' | '-' | '*') => chars.next() == Some(' '),
        Some(c) if c.is_ascii_alphanumeric() => {
            let marker: String = line
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            let rest = &line[marker.len()..];
            let short = marker.len() <= 3
                && (marker.len() == 1 || marker.chars().all(|c| c.is_ascii_digit()));
            short && (rest.starts_with(". ") || rest.starts_with(") "))
        }
        _ => false,
    }
}

fn ends_with_hyphenated_word(text: &str) -> bool {
    let mut rev = text.chars().rev();
    rev.next() == Some('-') && rev.next().is_some_and(char::is_alphabetic)
}

fn starts_lowercase(line: &str) -> bool {
    line.chars().next().is_some_and(char::is_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Extraction with the default limits and plenty of time.
    fn extract(format: Format, bytes: &[u8]) -> Result<(String, Format), ExtractError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        super::extract(format, bytes, &Limits::default(), deadline)
    }

    /// A minimal valid PDF: one page per entry, each showing its text in Helvetica at 24 pt.
    fn minimal_pdf(pages: &[&str]) -> Vec<u8> {
        let streams: Vec<String> = pages
            .iter()
            .map(|text| format!("BT\n/F1 24 Tf\n72 700 Td\n({text}) Tj\nET\n"))
            .collect();
        pdf_document(
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            &streams,
        )
    }

    /// A PDF with one page per content stream, all sharing font `/F1` (object 3). The
    /// cross-reference table offsets are computed as the file is written.
    fn pdf_document(font: &str, streams: &[String]) -> Vec<u8> {
        let page_count = streams.len();
        // Objects: 1 catalog, 2 page tree, 3 font, then a page and its content stream per page.
        let kids: Vec<String> = (0..page_count)
            .map(|i| format!("{} 0 R", 4 + 2 * i))
            .collect();
        let mut objects: Vec<String> = vec![
            "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
            format!(
                "<< /Type /Pages /Kids [{}] /Count {page_count} >>",
                kids.join(" ")
            ),
            font.to_string(),
        ];
        for (i, content) in streams.iter().enumerate() {
            objects.push(format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
                 /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                5 + 2 * i
            ));
            objects.push(format!(
                "<< /Length {} >>\nstream\n{content}endstream",
                content.len()
            ));
        }
        let objects: Vec<Vec<u8>> = objects.into_iter().map(String::into_bytes).collect();
        pdf_from_objects(&objects)
    }

    /// A PDF of these objects (numbered from 1, the first one the catalog).
    fn pdf_from_objects(objects: &[Vec<u8>]) -> Vec<u8> {
        let mut pdf = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::with_capacity(objects.len());
        for (i, object) in objects.iter().enumerate() {
            offsets.push(pdf.len());
            pdf.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
            pdf.extend_from_slice(object);
            pdf.extend_from_slice(b"\nendobj\n");
        }
        let xref_offset = pdf.len();
        let mut xref = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
        for offset in offsets {
            xref.push_str(&format!("{offset:010} 00000 n \n"));
        }
        xref.push_str(&format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref_offset}\n%%EOF\n",
            objects.len() + 1
        ));
        pdf.extend_from_slice(xref.as_bytes());
        pdf
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// A stream object: `dict` entries, then `data` compressed `layers` times and declared with
    /// as many `/FlateDecode` filters; `length` is written as given (`None`: the real length).
    fn stream_object(dict: &str, data: &[u8], layers: usize, length: Option<&str>) -> Vec<u8> {
        let mut data = data.to_vec();
        for _ in 0..layers {
            data = deflate(&data);
        }
        let filters = vec!["/FlateDecode"; layers].join(" ");
        let length = length.map_or_else(|| data.len().to_string(), str::to_string);
        let mut object =
            format!("<< {dict} /Length {length} /Filter [{filters}] >>\nstream\n").into_bytes();
        object.extend_from_slice(&data);
        object.extend_from_slice(b"\nendstream");
        object
    }

    /// One page drawing `content` (object 4) with Helvetica as `/F1` and `xobjects` as its
    /// XObject resources; `extra` objects follow from number 5.
    fn page_pdf(content: Vec<u8>, xobjects: &str, extra: Vec<Vec<u8>>) -> Vec<u8> {
        let mut objects = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
                 /Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> \
                 /XObject << {xobjects} >> >> >>"
            )
            .into_bytes(),
            content,
        ];
        objects.extend(extra);
        pdf_from_objects(&objects)
    }

    fn small_limits() -> Limits {
        Limits {
            max_stream_bytes: 1024 * 1024,
            max_document_bytes: 4 * 1024 * 1024,
            max_text_bytes: 1024 * 1024,
            max_pages: 10,
        }
    }

    fn extract_with(limits: &Limits, pdf: &[u8]) -> Result<(String, Format), ExtractError> {
        super::extract(
            Format::Pdf,
            pdf,
            limits,
            Instant::now() + Duration::from_secs(60),
        )
    }

    const TEXT: &[u8] = b"BT\n/F1 24 Tf\n72 700 Td\n(Compressed cheque policy) Tj\nET\n";

    #[test]
    fn compressed_pdf_streams_are_extracted_within_the_limits() {
        let pdf = page_pdf(stream_object("", TEXT, 2, None), "", vec![]);
        let (text, _) = extract_with(&small_limits(), &pdf).unwrap();
        assert_eq!(text, "Compressed cheque policy");
    }

    #[test]
    fn a_pdf_bomb_is_refused_before_it_inflates() {
        // 8 MiB of spaces after the text, three Flate layers: a few hundred bytes on disk.
        let mut content = TEXT.to_vec();
        content.resize(8 * 1024 * 1024, b' ');
        let direct = stream_object("", &content, 3, None);
        assert!(direct.len() < 2_000, "{}", direct.len());
        let limits = small_limits();
        let error = extract_with(&limits, &page_pdf(direct, "", vec![])).unwrap_err();
        assert!(matches!(error, ExtractError::Limit(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            "refused: a PDF stream decodes to more than 1 MiB (EXTRACT_MAX_STREAM_BYTES)"
        );
        // A length given by reference (to a lying object, here) is no way around the check.
        let indirect = stream_object("", &content, 3, Some("5 0 R"));
        let pdf = page_pdf(indirect, "", vec![b"12".to_vec()]);
        let error = extract_with(&limits, &pdf).unwrap_err();
        assert!(matches!(error, ExtractError::Limit(_)), "{error:?}");
        // Nor is a stream the cross-reference table never mentions (it could be an object
        // stream or be reached some other way).
        let mut hidden = page_pdf(stream_object("", TEXT, 1, None), "", vec![]);
        hidden.extend_from_slice(b"\n% unlisted\n9 0 obj\n");
        hidden.extend_from_slice(&stream_object("/Type /ObjStm", &content, 3, None));
        assert!(matches!(
            extract_with(&limits, &hidden).unwrap_err(),
            ExtractError::Limit(_)
        ));
        // Many streams each under the stream limit still add up.
        let mut padding = vec![b' '; 900 * 1024];
        padding[..TEXT.len()].copy_from_slice(TEXT);
        let extra = (0..6)
            .map(|_| stream_object("", &padding, 2, None))
            .collect();
        let pdf = page_pdf(stream_object("", TEXT, 1, None), "", extra);
        let error = extract_with(&limits, &pdf).unwrap_err();
        assert!(
            error.to_string().contains("EXTRACT_MAX_DOCUMENT_BYTES"),
            "{error}"
        );
    }

    #[test]
    fn a_page_naming_one_stream_many_times_is_refused() {
        let mut content = TEXT.to_vec();
        content.resize(900 * 1024, b' ');
        let contents = vec!["4 0 R"; 50].join(" ");
        let pdf = pdf_from_objects(&[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents [{contents}] >>"
            )
            .into_bytes(),
            stream_object("", &content, 1, None),
        ]);
        // 50 × 900 KiB, concatenated by lopdf before the page is drawn.
        let error = extract_with(&small_limits(), &pdf).unwrap_err();
        assert_eq!(
            error.to_string(),
            "refused: a PDF page draws more than 4 MiB of content (EXTRACT_MAX_DOCUMENT_BYTES)"
        );
    }

    #[test]
    fn absurd_filter_chains_are_refused() {
        let pdf = page_pdf(stream_object("", TEXT, 5, None), "", vec![]);
        let error = extract_with(&small_limits(), &pdf).unwrap_err();
        assert_eq!(
            error.to_string(),
            "refused: a PDF stream has 5 filters (at most 4 are accepted)"
        );
    }

    #[test]
    fn page_count_and_text_size_are_capped() {
        let pages: Vec<&str> = vec!["page"; 11];
        let error = extract_with(&small_limits(), &minimal_pdf(&pages)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "refused: the PDF has more than 10 pages (EXTRACT_MAX_PAGES)"
        );
        let tight = Limits {
            max_text_bytes: 20,
            ..small_limits()
        };
        let error =
            extract_with(&tight, &minimal_pdf(&["a long line of text on page one"])).unwrap_err();
        assert!(
            error.to_string().contains("EXTRACT_MAX_TEXT_BYTES"),
            "{error}"
        );
        let error = super::extract(
            Format::Text,
            &[b'x'; 21],
            &tight,
            Instant::now() + Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("EXTRACT_MAX_TEXT_BYTES"),
            "{error}"
        );
    }

    #[test]
    fn forms_drawing_themselves_are_refused_not_a_stack_overflow() {
        let form = |content: &str| {
            format!(
                "<< /Type /XObject /Subtype /Form /BBox [0 0 10 10] /Length {} >>\nstream\n{content}\nendstream",
                content.len()
            )
            .into_bytes()
        };
        let page = form("/X Do");
        // pdf-extract would recurse for ever on this one.
        let pdf = page_pdf(page.clone(), "/X 5 0 R", vec![form("/X Do")]);
        let error = extract_with(&small_limits(), &pdf).unwrap_err();
        assert!(
            error.to_string().contains("forms more than 16 deep"),
            "{error}"
        );
        // Nor may forms fan out: 10 × 10 × 10 × 10 × 10 drawings.
        let ten = |name: &str| vec![format!("/{name} Do"); 10].join(" ");
        let pdf = page_pdf(
            form(&ten("A")),
            "/A 5 0 R /B 6 0 R /C 7 0 R /D 8 0 R /E 9 0 R",
            vec![
                form(&ten("B")),
                form(&ten("C")),
                form(&ten("D")),
                form(&ten("E")),
                form("BT /F1 12 Tf (x) Tj ET"),
            ],
        );
        let error = extract_with(&small_limits(), &pdf).unwrap_err();
        assert!(error.to_string().contains("10000 times"), "{error}");
    }

    #[test]
    fn encrypted_pdfs_are_refused() {
        let pdf = String::from_utf8(minimal_pdf(&["secret"]))
            .unwrap()
            .replace("/Root 1 0 R >>", "/Root 1 0 R /Encrypt 9 0 R >>");
        let error = extract(Format::Pdf, pdf.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "could not read the PDF: it is encrypted (encrypted PDFs are not supported)"
        );
    }

    #[test]
    fn the_deadline_stops_a_pdf_extraction() {
        let error = super::extract(
            Format::Pdf,
            &minimal_pdf(&["late"]),
            &Limits::default(),
            Instant::now().checked_sub(Duration::from_secs(1)).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(error, ExtractError::Timeout), "{error:?}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any bytes, as any format, give text within the limit or an error, never a panic
            /// that escapes; PDF-looking inputs mix real syntax with noise to reach the parser.
            #[test]
            fn no_input_crashes_extraction(
                noise in proptest::collection::vec(any::<u8>(), 0..512),
                pieces in proptest::collection::vec(prop::sample::select(vec![
                    "1 0 obj", "<< /Length 5 0 R /Filter [/FlateDecode /LZWDecode] >>", "stream\n",
                    "endstream", "endobj", "/Type /ObjStm", "xref", "trailer << /Root 1 0 R >>",
                    "startxref 9", "%%EOF", "/DecodeParms << /Predictor 12 /Columns 4 >>",
                    "<div>", "<table><tr><td>", "&amp;", "/X Do", "BT (x) Tj ET",
                ]), 0..40),
            ) {
                let mut pdf = b"%PDF-1.4\n".to_vec();
                for piece in &pieces {
                    pdf.extend_from_slice(piece.as_bytes());
                    pdf.push(b'\n');
                }
                pdf.extend_from_slice(&noise);
                let limits = small_limits();
                for format in [Format::Text, Format::Markdown, Format::Html, Format::Pdf] {
                    for bytes in [&noise[..], &pdf[..]] {
                        let deadline = Instant::now() + Duration::from_secs(10);
                        if let Ok((text, _)) = super::super::extract(format, bytes, &limits, deadline) {
                            prop_assert!(text.len() <= limits.max_text_bytes);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_table_with_one_long_cell_does_not_multiply_into_padding() {
        let html = format!(
            "<table><tr><td>{}</td><td>first</td></tr>{}</table>",
            "word ".repeat(20_000),
            "<tr><td>left</td><td>right</td></tr>".repeat(4_000)
        );
        // Laid out as a table, each of the 4,000 rows was padded to the long cell: 400 MB.
        let (text, _) = extract(Format::Html, html.as_bytes()).unwrap();
        assert!(text.len() < html.len(), "{} bytes", text.len());
        assert!(text.contains("word word") && text.contains("first"));
        assert_eq!(text.lines().filter(|line| *line == "right").count(), 4_000);
    }

    #[test]
    fn deeply_nested_html_is_refused() {
        let html = format!(
            "{}deep{}",
            "<div>".repeat(200_000),
            "</div>".repeat(200_000)
        );
        let error = extract(Format::Html, html.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "refused: the HTML nests elements more than 256 deep"
        );
        let fine = format!("{}ok{}", "<div>".repeat(100), "</div>".repeat(100));
        assert_eq!(extract(Format::Html, fine.as_bytes()).unwrap().0, "ok");
    }

    #[test]
    fn text_utf8_passes_through() {
        let (text, format) =
            extract(Format::Text, "Refunds — café ✓\nline two".as_bytes()).unwrap();
        assert_eq!(text, "Refunds — café ✓\nline two");
        assert_eq!(format, Format::Text);
    }

    #[test]
    fn text_strips_byte_order_mark() {
        let (text, _) = extract(Format::Text, b"\xEF\xBB\xBFhello").unwrap();
        assert_eq!(text, "hello");
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let error = extract(Format::Text, b"caf\xE9 latin-1").unwrap_err();
        assert!(matches!(error, ExtractError::NotUtf8));
        assert_eq!(error.to_string(), "not valid UTF-8 text");
        assert!(matches!(
            extract(Format::Markdown, b"\xFF\xFE").unwrap_err(),
            ExtractError::NotUtf8
        ));
    }

    #[test]
    fn markdown_passes_through() {
        let markdown = "# Refunds\n\n## Cheques\n\n- one\n- two\n\n```\ncode\n```\n";
        let (text, format) = extract(Format::Markdown, markdown.as_bytes()).unwrap();
        assert_eq!(text, markdown);
        assert_eq!(format, Format::Markdown);
    }

    #[test]
    fn html_keeps_headings_and_drops_script_and_style() {
        let html = r#"<!doctype html><html><head><title>Policy</title>
            <style>body { color: red; } .secret { display: none }</style>
            <script>var tracking = "do-not-index";</script></head>
            <body><h1>Refunds</h1><p>We refund <strong>within 30 days</strong>.</p>
            <h2>Cheques</h2><p>Cheques take <a href="https://example.com/x">five days</a>.</p>
            <ul><li>first item</li><li>second item</li></ul>
            <script>alert("nope")</script></body></html>"#;
        let (text, format) = extract(Format::Html, html.as_bytes()).unwrap();
        assert_eq!(format, Format::Markdown);
        assert!(text.lines().any(|l| l == "# Refunds"), "{text}");
        assert!(text.lines().any(|l| l == "## Cheques"), "{text}");
        assert!(text.contains("within 30 days"), "{text}");
        assert!(text.contains("five days"), "{text}");
        assert!(
            text.contains("first item") && text.contains("second item"),
            "{text}"
        );
        for banned in [
            "color: red",
            "tracking",
            "do-not-index",
            "alert",
            "display: none",
            "https://example.com",
        ] {
            assert!(!text.contains(banned), "{banned:?} leaked into {text}");
        }
        assert!(!text.contains("\n\n\n"), "{text:?}");
    }

    #[test]
    fn html_that_is_not_utf8_is_decoded_leniently() {
        let (text, _) = extract(Format::Html, b"<p>caf\xE9 ok</p>").unwrap();
        assert_eq!(text, "caf\u{FFFD} ok");
    }

    #[test]
    fn pdf_text_is_extracted() {
        let pdf = minimal_pdf(&["Hello cheque policy"]);
        assert_eq!(Format::detect(None, None, &pdf), Some(Format::Pdf));
        let (text, format) = extract(Format::Pdf, &pdf).unwrap();
        assert_eq!(format, Format::Text);
        assert_eq!(text, "Hello cheque policy");
    }

    #[test]
    fn pdf_pages_become_paragraphs() {
        let pdf = minimal_pdf(&["First page text", "Second page text"]);
        let (text, _) = extract(Format::Pdf, &pdf).unwrap();
        assert_eq!(text, "First page text\n\nSecond page text");
    }

    #[test]
    fn pdf_without_text_is_an_error() {
        let pdf = minimal_pdf(&[""]);
        let error = extract(Format::Pdf, &pdf).unwrap_err();
        assert!(matches!(error, ExtractError::PdfNoText), "{error:?}");
        assert_eq!(
            error.to_string(),
            "the PDF has no extractable text (scanned images?)"
        );
    }

    #[test]
    fn garbage_pdf_is_an_error_not_a_panic() {
        for bytes in [
            &b"%PDF-1.4\n\x00\x01garbage garbage \xFF\xFE"[..],
            b"%PDF-",
            b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
              trailer << /Root 1 0 R >>\n%%EOF",
        ] {
            let error = extract(Format::Pdf, bytes).unwrap_err();
            assert!(matches!(error, ExtractError::Pdf(_)), "{error:?}");
            assert!(error.to_string().starts_with("could not read the PDF: "));
        }
        // A truncated real PDF.
        let pdf = minimal_pdf(&["Hello cheque policy"]);
        assert!(extract(Format::Pdf, &pdf[..pdf.len() / 2]).is_err());
    }

    #[test]
    fn pdf_that_crashes_the_parser_is_an_error() {
        // pdf-extract 0.12 panics on these (a Type0 font without descendants, a `Td` with one
        // operand); the panic must come back as an error.
        let type0 = pdf_document(
            "<< /Type /Font /Subtype /Type0 /BaseFont /Foo >>",
            &["BT\n/F1 24 Tf\n72 700 Td\n(Hello) Tj\nET\n".to_string()],
        );
        let bad_operands = pdf_document(
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            &["BT\n/F1 24 Tf\n72 Td\n(Hello) Tj\nET\n".to_string()],
        );
        for pdf in [type0, bad_operands] {
            let error = extract(Format::Pdf, &pdf).unwrap_err();
            assert!(matches!(error, ExtractError::Pdf(_)), "{error:?}");
            assert!(
                error
                    .to_string()
                    .starts_with("could not read the PDF: the parser crashed ("),
                "{error}"
            );
        }
    }

    #[test]
    fn clean_pdf_text_joins_wrapped_lines_and_hyphenation() {
        let raw = concat!(
            "Refunds are paid by che-\nque within ten work-\ning days of the\nrequest.\n\n",
            "A new para-\nGraph stays.\n",
            "\u{c}Next page   starts\there.\r\n\r\n",
            "Items:\n• one\n• two\n1. first\n2) second\nwell- \nknown\n",
        );
        assert_eq!(
            clean_pdf_text(raw),
            "Refunds are paid by cheque within ten working days of the request.\n\n\
             A new para- Graph stays.\n\n\
             Next page starts here.\n\n\
             Items:\n• one\n• two\n1. first\n2) second wellknown"
        );
        assert_eq!(clean_pdf_text("\n\n \u{c} \n"), "");
        assert_eq!(clean_pdf_text("a\u{0}b\u{7}c"), "abc");
    }
}
