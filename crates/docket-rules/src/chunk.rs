//! Chunking extracted text for retrieval: by structure, with overlap, under a token limit.
//!
//! Markdown is first cut into sections at its headings (ATX `#` headings and one-line setext
//! headings; `#` lines inside fenced code blocks are not headings). Each section is then split
//! with text-splitter's `MarkdownSplitter` (plain text: `TextSplitter`), which keeps the largest
//! semantic units that fit (blocks, then lines, sentences, words, graphemes, characters), with
//! sizes counted in cl100k_base tokens. Sections never share a chunk, so every chunk has exactly
//! one heading path.
//!
//! Overlap is added here rather than by text-splitter: text-splitter only overlaps whole units of
//! the level it split at, so a section made of paragraphs of 60-400 tokens would get no overlap
//! at all. Each section is split to `max_tokens - overlap_tokens`, and every chunk after the
//! first of a section is then extended backwards to start with about `overlap_tokens` tokens from
//! the end of the previous chunk (starting at a word boundary where there is one). The result is
//! checked against `max_tokens` again, so the limit holds.

use std::borrow::Cow;
use std::sync::LazyLock;

use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};
use tiktoken_rs::CoreBPE;

use crate::document::Format;

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// 0-based index of the chunk in its document.
    pub position: usize,
    /// The Markdown heading path above the chunk, e.g. `Refunds > Cheques`; `None` for plain text
    /// and for Markdown before the first heading.
    pub heading: Option<String>,
    pub text: String,
    /// cl100k_base tokens in `text`.
    pub token_count: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct ChunkOptions {
    /// Hard limit on the tokens of a chunk (default 400).
    pub max_tokens: usize,
    /// Tokens a chunk repeats from the end of the previous chunk of the same section (default
    /// 50). Must be less than `max_tokens`; a larger value is treated as `max_tokens / 2`.
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            max_tokens: 400,
            overlap_tokens: 50,
        }
    }
}

impl ChunkOptions {
    /// `(max_tokens, overlap_tokens)` made consistent: at least one token per chunk and an overlap
    /// that leaves room for new text.
    fn effective(self) -> (usize, usize) {
        let max = self.max_tokens.max(1);
        let overlap = if self.overlap_tokens < max {
            self.overlap_tokens
        } else {
            max / 2
        };
        (max, overlap)
    }
}

static CL100K_BASE: LazyLock<CoreBPE> = LazyLock::new(|| {
    tiktoken_rs::cl100k_base().expect("the cl100k_base vocabulary is compiled into tiktoken-rs")
});

/// Number of cl100k_base tokens in `text` (special-token text counts as ordinary text).
pub fn count_tokens(text: &str) -> usize {
    CL100K_BASE.encode_ordinary(text).len()
}

/// Splits extracted text into chunks of at most `options.max_tokens` tokens.
///
/// `Markdown` (and `Html`, whose extracted text is Markdown) is split by heading sections first;
/// `Text` (and `Pdf`) is split as plain text with no headings. CRLF and lone CR line endings are
/// normalised to LF first, so chunk text only ever contains LF. Chunk text is trimmed; empty or
/// whitespace-only input gives no chunks. Positions run 0..n in document order.
///
/// A heading line is kept at the start of the first chunk of its section when it fits there; a
/// heading directly followed by a subheading (no text of its own) gets no chunk, it only appears
/// in the heading paths of the sections below it.
///
/// A "word" longer than the limit (a long URL, base64, text without spaces) is cut at grapheme
/// and then character boundaries into pieces that fit. Only a single character can exceed the
/// limit, and a character is at most 4 tokens, so `max_tokens >= 4` is always respected.
pub fn chunk(text: &str, format: Format, options: ChunkOptions) -> Vec<Chunk> {
    let text = normalize_line_endings(text);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let (max_tokens, overlap_tokens) = options.effective();
    let markdown = matches!(format, Format::Markdown | Format::Html);
    let sections = if markdown {
        markdown_sections(&text)
    } else {
        vec![Section {
            heading: None,
            text: &text,
            heading_len: 0,
        }]
    };
    let mut chunks = Vec::new();
    for section in sections {
        for text in split_section(&section, markdown, max_tokens, overlap_tokens) {
            chunks.push(Chunk {
                position: chunks.len(),
                heading: section.heading.clone(),
                token_count: count_tokens(&text),
                text,
            });
        }
    }
    chunks
}

fn normalize_line_endings(text: &str) -> Cow<'_, str> {
    if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A run of the document under one heading.
struct Section<'a> {
    heading: Option<String>,
    /// The section's text, starting with its heading line(s).
    text: &'a str,
    /// Bytes of `text` taken by the heading line(s), newline included; 0 without a heading.
    heading_len: usize,
}

struct HeadingLine {
    /// Byte offset where the heading starts (the title line for a setext heading).
    start: usize,
    /// Byte offset just after the heading line(s).
    end: usize,
    level: usize,
    title: String,
}

fn markdown_sections(text: &str) -> Vec<Section<'_>> {
    let headings = find_headings(text);
    let mut sections = Vec::new();
    let first_heading = headings.first().map_or(text.len(), |h| h.start);
    if !text[..first_heading].trim().is_empty() {
        sections.push(Section {
            heading: None,
            text: &text[..first_heading],
            heading_len: 0,
        });
    }
    let mut path: Vec<(usize, &str)> = Vec::new();
    for (i, heading) in headings.iter().enumerate() {
        while path
            .last()
            .is_some_and(|(level, _)| *level >= heading.level)
        {
            path.pop();
        }
        path.push((heading.level, &heading.title));
        let next = headings.get(i + 1);
        let end = next.map_or(text.len(), |n| n.start);
        let has_body = !text[heading.end.min(end)..end].trim().is_empty();
        if !has_body && next.is_some_and(|n| n.level > heading.level) {
            // A heading that only introduces subsections lives on in their heading paths.
            continue;
        }
        let joined = path
            .iter()
            .map(|(_, title)| *title)
            .filter(|title| !title.is_empty())
            .collect::<Vec<_>>()
            .join(" > ");
        sections.push(Section {
            heading: (!joined.is_empty()).then_some(joined),
            text: &text[heading.start..end],
            heading_len: heading.end - heading.start,
        });
    }
    sections
}

/// ATX headings (`## Title`, up to three spaces of indentation, optional closing `#`s) and setext
/// headings whose title is a single line after a blank line (`Title` + `===` or `---`), outside
/// fenced code blocks.
fn find_headings(text: &str) -> Vec<HeadingLine> {
    let mut headings = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    // A line that would become a setext heading title if the next line underlines it.
    let mut title_candidate: Option<(usize, &str)> = None;
    // Whether the current line may start a new paragraph (start, after a blank line, heading…).
    let mut at_block_start = true;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let content = line.strip_suffix('\n').unwrap_or(line);
        let body = content.trim_start_matches(' ');
        let indented = content.len() - body.len() > 3;
        let candidate = title_candidate.take();

        if let Some((marker, len)) = fence {
            if !indented
                && marker_run(body, marker) >= len
                && body.trim_start_matches(marker).trim().is_empty()
            {
                fence = None;
                at_block_start = true;
            }
            continue;
        }
        if body.trim().is_empty() {
            at_block_start = true;
            continue;
        }
        if !indented {
            if let Some(opened) = fence_opening(body) {
                fence = Some(opened);
                at_block_start = false;
                continue;
            }
            if let Some((level, title)) = atx_heading(body) {
                headings.push(HeadingLine {
                    start,
                    end: offset,
                    level,
                    title,
                });
                at_block_start = true;
                continue;
            }
            if let (Some((title_start, title)), Some(level)) = (candidate, setext_underline(body)) {
                headings.push(HeadingLine {
                    start: title_start,
                    end: offset,
                    level,
                    title: clean_title(title),
                });
                at_block_start = true;
                continue;
            }
        }
        if at_block_start && !indented && can_be_setext_title(body) {
            title_candidate = Some((start, body));
        }
        at_block_start = false;
    }
    headings
}

fn marker_run(body: &str, marker: char) -> usize {
    body.chars().take_while(|c| *c == marker).count()
}

fn fence_opening(body: &str) -> Option<(char, usize)> {
    let marker = body.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = marker_run(body, marker);
    (len >= 3).then_some((marker, len))
}

fn atx_heading(body: &str) -> Option<(usize, String)> {
    let level = marker_run(body, '#');
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &body[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let rest = rest.trim();
    // An optional closing sequence of `#`s, separated from the title by a space.
    let without_closing = rest.trim_end_matches('#');
    let title = if without_closing.is_empty() || without_closing.ends_with([' ', '\t']) {
        without_closing
    } else {
        rest
    };
    Some((level, clean_title(title)))
}

fn setext_underline(body: &str) -> Option<usize> {
    let underline = body.trim_end();
    if !underline.is_empty() && underline.chars().all(|c| c == '=') {
        Some(1)
    } else if !underline.is_empty() && underline.chars().all(|c| c == '-') {
        Some(2)
    } else {
        None
    }
}

/// Lines that are paragraph text rather than a list item, quote, table row, HTML block or rule.
fn can_be_setext_title(body: &str) -> bool {
    if body.starts_with(['>', '|', '<', '-', '*', '+', '=', '_']) {
        return false;
    }
    let digits = body.chars().take_while(char::is_ascii_digit).count();
    let after_digits = &body[digits..];
    !(digits > 0 && (after_digits.starts_with(". ") || after_digits.starts_with(") ")))
}

fn clean_title(title: &str) -> String {
    title.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The chunk texts of one section, in order.
fn split_section(
    section: &Section<'_>,
    markdown: bool,
    max_tokens: usize,
    overlap_tokens: usize,
) -> Vec<String> {
    let text = section.text;
    let capacity = max_tokens - overlap_tokens;
    let config = ChunkConfig::new(capacity).with_sizer(&*CL100K_BASE);
    let mut pieces: Vec<(usize, usize)> = if markdown {
        MarkdownSplitter::new(config)
            .chunk_indices(text)
            .map(|(start, piece)| (start, start + piece.len()))
            .collect()
    } else {
        TextSplitter::new(config)
            .chunk_indices(text)
            .map(|(start, piece)| (start, start + piece.len()))
            .collect()
    };
    pieces.retain(|&(start, end)| !text[start..end].trim().is_empty());

    // The splitter puts the heading line alone in a chunk when the first block after it does not
    // fit beside it; glue it to that block instead when the limit allows (the overlap budget
    // usually leaves room), otherwise drop it (the heading path still names it).
    if section.heading_len > 0 && pieces.len() > 1 {
        let heading_end = text[..section.heading_len].trim_end().len();
        let (first_start, first_end) = pieces[0];
        if (heading_end..=section.heading_len).contains(&first_end) {
            let merged = (first_start, pieces[1].1);
            if count_tokens(&text[merged.0..merged.1]) <= max_tokens {
                pieces[1] = merged;
            }
            pieces.remove(0);
        }
    }

    let mut out = Vec::with_capacity(pieces.len());
    let mut previous: Option<(usize, usize)> = None;
    for &(start, end) in &pieces {
        // The overlap comes from the previous piece's own text, not from the overlap it repeats.
        let chunk_start = match previous {
            Some(previous) if overlap_tokens > 0 => {
                overlap_start(text, previous, end, overlap_tokens, max_tokens).unwrap_or(start)
            }
            _ => start,
        };
        out.extend(enforce_limit(text[chunk_start..end].trim(), max_tokens));
        previous = Some((start, end));
    }
    out
}

/// Where the chunk ending at `end` should start so that it begins with about `overlap_tokens`
/// tokens from the end of the previous piece `(prev_start, prev_end)` and stays within
/// `max_tokens`. Prefers starting at a word; `None` when no overlap fits.
fn overlap_start(
    text: &str,
    (prev_start, prev_end): (usize, usize),
    end: usize,
    overlap_tokens: usize,
    max_tokens: usize,
) -> Option<usize> {
    let boundaries: Vec<usize> = text[prev_start..prev_end]
        .char_indices()
        .map(|(i, _)| prev_start + i)
        .collect();
    // Suffixes shrink as the start moves right: find the longest one within the overlap budget.
    let first_fitting =
        boundaries.partition_point(|&start| count_tokens(&text[start..prev_end]) > overlap_tokens);
    let mut start = *boundaries.get(first_fitting)?;
    if !starts_word(text, start, prev_start) {
        // Move to the next word, unless the rest has no spaces (e.g. Chinese, Japanese).
        if let Some(next) = next_word_start(text, start, prev_end) {
            start = next;
        }
    }
    if !starts_sentence(text, start, prev_start) {
        // Start at a sentence (or line) when that still keeps at least half of the overlap.
        if let Some(next) = next_sentence_start(text, start, prev_end)
            && 2 * count_tokens(&text[next..prev_end]) >= overlap_tokens
        {
            start = next;
        }
    }
    loop {
        if start >= prev_end {
            return None;
        }
        if count_tokens(text[start..end].trim()) <= max_tokens {
            return Some(start);
        }
        start = next_word_start(text, start, prev_end)?;
    }
}

fn starts_word(text: &str, at: usize, lower_bound: usize) -> bool {
    at <= lower_bound || text[..at].ends_with(char::is_whitespace)
}

const SENTENCE_ENDS: [char; 6] = ['.', '!', '?', '。', '！', '？'];

fn starts_sentence(text: &str, at: usize, lower_bound: usize) -> bool {
    let before = text[..at].trim_end_matches([' ', '\t']);
    at <= lower_bound || before.ends_with('\n') || before.ends_with(SENTENCE_ENDS)
}

/// The first offset in `(from, limit)` that starts a sentence or a line.
fn next_sentence_start(text: &str, from: usize, limit: usize) -> Option<usize> {
    let window = &text[from..limit];
    let mut chars = window.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let boundary = match c {
            '\n' | '。' | '！' | '？' => true,
            '.' | '!' | '?' => chars.peek().is_some_and(|(_, next)| next.is_whitespace()),
            _ => false,
        };
        if boundary {
            let rest = window[i + c.len_utf8()..].trim_start();
            return (!rest.is_empty()).then(|| limit - rest.len());
        }
    }
    None
}

/// The first offset in `(from, limit)` that follows whitespace and is not whitespace itself.
fn next_word_start(text: &str, from: usize, limit: usize) -> Option<usize> {
    let window = &text[from..limit];
    let space = window.find(char::is_whitespace)?;
    let rest = window[space..].trim_start();
    (!rest.is_empty()).then(|| limit - rest.len())
}

/// `text` as is when it is within `max_tokens`, otherwise cut at character boundaries into the
/// longest pieces that are. Only reached for a grapheme cluster bigger than the limit, which the
/// splitter cannot cut.
fn enforce_limit(text: &str, max_tokens: usize) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    if count_tokens(text) <= max_tokens {
        return vec![text.to_string()];
    }
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let ends: Vec<usize> = rest.char_indices().map(|(i, c)| i + c.len_utf8()).collect();
        let fitting = ends.partition_point(|&end| count_tokens(&rest[..end]) <= max_tokens);
        // At least one character, even if that one character is over the limit.
        let cut = ends
            .get(fitting.saturating_sub(1))
            .copied()
            .unwrap_or(rest.len());
        let piece = rest[..cut].trim();
        if !piece.is_empty() {
            pieces.push(piece.to_string());
        }
        rest = &rest[cut..];
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_tokens: usize, overlap_tokens: usize) -> ChunkOptions {
        ChunkOptions {
            max_tokens,
            overlap_tokens,
        }
    }

    /// The longest start of `next` that is also the end of `prev`.
    fn shared<'a>(prev: &str, next: &'a str) -> &'a str {
        next.char_indices()
            .rev()
            .map(|(i, c)| i + c.len_utf8())
            .find(|&end| prev.ends_with(&next[..end]))
            .map_or("", |end| &next[..end])
    }

    fn sentences(count: usize) -> String {
        (0..count)
            .map(|i| {
                format!("Sentence number {i} explains how refunds by cheque work for case {i}. ")
            })
            .collect()
    }

    fn assert_invariants(chunks: &[Chunk], max_tokens: usize) {
        for (i, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.position, i);
            assert_eq!(chunk.token_count, count_tokens(&chunk.text));
            assert!(
                chunk.token_count <= max_tokens,
                "chunk {i} has {} tokens: {:?}",
                chunk.token_count,
                chunk.text
            );
            assert!(!chunk.text.trim().is_empty());
            assert_eq!(chunk.text, chunk.text.trim());
        }
    }

    #[test]
    fn count_tokens_uses_cl100k_base() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("An apple a"), 3);
        assert_eq!(count_tokens("hello world"), 2);
    }

    #[test]
    fn default_options() {
        let defaults = ChunkOptions::default();
        assert_eq!((defaults.max_tokens, defaults.overlap_tokens), (400, 50));
    }

    #[test]
    fn empty_and_whitespace_input_give_no_chunks() {
        for text in ["", " ", "\n\n", " \t\r\n \r\n", "\u{a0}\u{3000}\n"] {
            for format in [Format::Text, Format::Markdown, Format::Html, Format::Pdf] {
                assert!(
                    chunk(text, format, ChunkOptions::default()).is_empty(),
                    "{text:?} {format:?}"
                );
            }
        }
    }

    #[test]
    fn single_short_paragraph_is_one_chunk() {
        let text = "  Cheques are refunded within ten working days.\n";
        for format in [Format::Text, Format::Markdown] {
            let chunks = chunk(text, format, ChunkOptions::default());
            assert_eq!(
                chunks,
                vec![Chunk {
                    position: 0,
                    heading: None,
                    text: "Cheques are refunded within ten working days.".to_string(),
                    token_count: count_tokens("Cheques are refunded within ten working days."),
                }]
            );
        }
    }

    #[test]
    fn long_section_is_split_within_the_limit_with_overlap() {
        let body = sentences(40);
        let markdown = format!("# Refunds\n\n## Cheques\n\n{body}\n");
        for (format, text) in [
            (Format::Markdown, markdown.as_str()),
            (Format::Text, body.as_str()),
        ] {
            let chunks = chunk(text, format, options(120, 20));
            assert!(chunks.len() >= 5, "{format:?}: {chunks:#?}");
            assert_invariants(&chunks, 120);
            for pair in chunks.windows(2) {
                let overlap = shared(&pair[0].text, &pair[1].text);
                let tokens = count_tokens(overlap);
                assert!(
                    (10..=20).contains(&tokens),
                    "{tokens} tokens of overlap: {overlap:?}"
                );
                // The overlap starts at a sentence when one is close enough.
                assert!(
                    pair[1].text.starts_with("Sentence number "),
                    "{:?}",
                    pair[1].text
                );
            }
            for i in 0..40 {
                let sentence = format!("for case {i}.");
                assert!(
                    chunks.iter().any(|c| c.text.contains(&sentence)),
                    "{sentence} lost"
                );
            }
            if format == Format::Markdown {
                assert!(
                    chunks[0]
                        .text
                        .starts_with("## Cheques\n\nSentence number 0 ")
                );
                assert!(
                    chunks
                        .iter()
                        .all(|c| c.heading.as_deref() == Some("Refunds > Cheques"))
                );
            } else {
                assert!(chunks.iter().all(|c| c.heading.is_none()));
            }
        }
    }

    #[test]
    fn paragraph_sized_pieces_still_overlap() {
        // Every paragraph is bigger than the overlap, so text-splitter's own overlap (whole
        // paragraphs only) would give none.
        let paragraphs: String = (0..6)
            .map(|i| {
                let rules: String = (0..8)
                    .map(|j| format!("Rule {i}.{j} covers cheque refunds. "))
                    .collect();
                format!("Paragraph {i}: {rules}\n\n")
            })
            .collect();
        let chunks = chunk(
            &format!("# Big\n\n{paragraphs}"),
            Format::Markdown,
            options(120, 20),
        );
        assert!(chunks.len() >= 3, "{chunks:#?}");
        assert_invariants(&chunks, 120);
        for pair in chunks.windows(2) {
            let overlap = shared(&pair[0].text, &pair[1].text);
            assert!((10..=20).contains(&count_tokens(overlap)), "{overlap:?}");
        }
        for i in 0..6 {
            assert!(
                chunks
                    .iter()
                    .any(|c| c.text.contains(&format!("Paragraph {i}:")))
            );
        }
    }

    #[test]
    fn sections_do_not_share_chunks_or_overlap() {
        let text = "# Refunds\n\nRefund intro.\n\n# Cards\n\nCards are refunded at once.\n";
        let chunks = chunk(text, Format::Markdown, ChunkOptions::default());
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "# Refunds\n\nRefund intro.",
                "# Cards\n\nCards are refunded at once."
            ]
        );
    }

    #[test]
    fn nested_heading_paths() {
        let text = "Preamble before any heading.\n\n\
                    # A\n## B\nText in B.\n\
                    ### C ###\nText in C.\n\n\
                    ## D\n\nText in D.\n\n\
                    ```\n# not a heading, just code\n```\n\n\
                    #hashtag is not a heading either\n\n\
                    Setext E\n========\n\nText in E.\n\n\
                    Setext F\n--------\nText in F.\n\n\
                    #### Deep under F\nDeep text.\n";
        let chunks = chunk(text, Format::Markdown, ChunkOptions::default());
        let got: Vec<(Option<&str>, &str)> = chunks
            .iter()
            .map(|c| (c.heading.as_deref(), c.text.lines().next().unwrap_or("")))
            .collect();
        assert_eq!(
            got,
            [
                (None, "Preamble before any heading."),
                (Some("A > B"), "## B"),
                (Some("A > B > C"), "### C ###"),
                (Some("A > D"), "## D"),
                (Some("Setext E"), "Setext E"),
                (Some("Setext E > Setext F"), "Setext F"),
                (
                    Some("Setext E > Setext F > Deep under F"),
                    "#### Deep under F"
                ),
            ]
        );
        assert!(chunks[3].text.contains("# not a heading, just code"));
        assert!(chunks[3].text.contains("#hashtag is not a heading either"));
        assert_invariants(&chunks, 400);
    }

    #[test]
    fn heading_without_text_keeps_its_chunk_unless_subsections_follow() {
        let chunks = chunk(
            "# Only a title\n",
            Format::Markdown,
            ChunkOptions::default(),
        );
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            (chunks[0].heading.as_deref(), chunks[0].text.as_str()),
            (Some("Only a title"), "# Only a title")
        );

        let chunks = chunk(
            "# A\n\n# B\n\ntext",
            Format::Markdown,
            ChunkOptions::default(),
        );
        let got: Vec<_> = chunks
            .iter()
            .map(|c| (c.heading.as_deref(), c.text.as_str()))
            .collect();
        assert_eq!(got, [(Some("A"), "# A"), (Some("B"), "# B\n\ntext")]);
    }

    #[test]
    fn html_and_pdf_formats_chunk_like_markdown_and_text() {
        let text = "# Title\n\nBody text.";
        assert_eq!(
            chunk(text, Format::Html, ChunkOptions::default())[0]
                .heading
                .as_deref(),
            Some("Title")
        );
        assert_eq!(
            chunk(text, Format::Pdf, ChunkOptions::default())[0].heading,
            None
        );
    }

    #[test]
    fn word_longer_than_the_limit_is_cut_into_pieces_that_fit() {
        // No spaces anywhere: the splitter falls back to grapheme/character boundaries, and the
        // overlap starts mid-"word" because there is no word boundary to snap to.
        let word = "x7Qz9".repeat(200);
        let chunks = chunk(&word, Format::Text, options(50, 10));
        assert!(chunks.len() > 10);
        assert_invariants(&chunks, 50);
        assert!(word.starts_with(&chunks[0].text));
        assert!(word.ends_with(&chunks[chunks.len() - 1].text));
        for pair in chunks.windows(2) {
            assert!(word.contains(&pair[1].text));
            assert!(!shared(&pair[0].text, &pair[1].text).is_empty());
        }

        // A single grapheme cluster bigger than the limit (a letter with 40 combining accents)
        // cannot be cut by the splitter; it is then cut between its characters so the limit still
        // holds. Without overlap the pieces put back together give the original.
        let grapheme = format!("e{}", "\u{301}".repeat(40));
        let chunks = chunk(&grapheme, Format::Text, options(8, 0));
        assert!(chunks.len() > 1);
        assert_invariants(&chunks, 8);
        assert_eq!(
            chunks.iter().map(|c| c.text.as_str()).collect::<String>(),
            grapheme
        );
    }

    #[test]
    fn crlf_line_endings_are_normalised() {
        let crlf = "# Title\r\n\r\nLine one.\r\nLine two.\r\n\r\n## Sub\r\nMore.\r\n";
        let lf = crlf.replace("\r\n", "\n");
        let chunks = chunk(crlf, Format::Markdown, ChunkOptions::default());
        assert_eq!(
            chunks,
            chunk(&lf, Format::Markdown, ChunkOptions::default())
        );
        let got: Vec<_> = chunks
            .iter()
            .map(|c| (c.heading.as_deref(), c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("Title"), "# Title\n\nLine one.\nLine two."),
                (Some("Title > Sub"), "## Sub\nMore.")
            ]
        );
        // Old Mac line endings too.
        assert_eq!(
            chunk("a\rb", Format::Text, ChunkOptions::default())[0].text,
            "a\nb"
        );
    }

    #[test]
    fn unicode_text() {
        let text: String = (0..30)
            .map(|i| {
                format!(
                    "Rückerstattung {i}: Schecks brauchen fünf Tage — \
                     小切手の返金は{i}日かかります。🚀👩‍👩‍👧 "
                )
            })
            .collect();
        for format in [Format::Text, Format::Markdown] {
            let chunks = chunk(&text, format, options(40, 8));
            assert!(chunks.len() > 5);
            assert_invariants(&chunks, 40);
            for piece in &chunks {
                assert!(
                    text.contains(&piece.text),
                    "{:?} is not from the input",
                    piece.text
                );
            }
            for i in 0..30 {
                let marker = format!("Rückerstattung {i}:");
                assert!(
                    chunks.iter().any(|c| c.text.contains(&marker)),
                    "{marker} lost"
                );
            }
        }
        // Unicode headings.
        let chunks = chunk(
            "# Rückerstattung\n## 小切手\n本文。",
            Format::Markdown,
            ChunkOptions::default(),
        );
        assert_eq!(
            chunks[0].heading.as_deref(),
            Some("Rückerstattung > 小切手")
        );
    }

    #[test]
    fn positions_run_in_order_across_sections() {
        let text = format!(
            "# One\n\n{}\n\n# Two\n\n{}\n\n# Three\n\nShort.",
            sentences(15),
            sentences(15)
        );
        let chunks = chunk(&text, Format::Markdown, options(60, 10));
        assert!(chunks.len() > 6);
        assert_eq!(
            chunks.iter().map(|c| c.position).collect::<Vec<_>>(),
            (0..chunks.len()).collect::<Vec<_>>()
        );
        let headings: Vec<&str> = chunks.iter().filter_map(|c| c.heading.as_deref()).collect();
        assert_eq!(headings.len(), chunks.len());
        assert!(headings.is_sorted_by_key(|h| ["One", "Two", "Three"].iter().position(|x| x == h)));
        assert_eq!(
            chunks.last().map(|c| c.text.as_str()),
            Some("# Three\n\nShort.")
        );
    }

    #[test]
    fn overlap_not_below_max_is_clamped() {
        let text = sentences(10);
        for (max, overlap) in [(20, 20), (20, 500), (1, 1), (0, 0)] {
            let chunks = chunk(&text, Format::Text, options(max, overlap));
            assert!(!chunks.is_empty());
            assert_invariants(&chunks, max.max(4));
        }
    }
}
