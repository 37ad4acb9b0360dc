//! Uploaded documents: any bytes, as every format, through text extraction with small limits.
//! Extraction must return text within the text limit or an error: no panic escaping it, no stack
//! overflow, and (run with `-rss_limit_mb=512`) no memory beyond what the limits allow.
#![no_main]

use std::sync::Once;
use std::time::{Duration, Instant};

use docket::knowledge::extract::{Limits, extract};
use docket_rules::document::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static QUIET: Once = Once::new();
    // pdf-extract panics on many malformed files and the extractor turns those panics into
    // errors; the hook libfuzzer-sys installs would abort on them before they are caught.
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let limits = Limits {
        max_stream_bytes: 8 * 1024 * 1024,
        max_document_bytes: 32 * 1024 * 1024,
        max_text_bytes: 4 * 1024 * 1024,
        max_pages: 50,
    };
    // Raw bytes rarely start like a PDF; the same bytes behind a header reach the PDF parser.
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.extend_from_slice(data);
    let inputs = [
        (Format::Text, data),
        (Format::Markdown, data),
        (Format::Html, data),
        (Format::Pdf, data),
        (Format::Pdf, pdf.as_slice()),
    ];
    for (format, bytes) in inputs {
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Ok((text, _)) = extract(format, bytes, &limits, deadline) {
            assert!(text.len() <= limits.max_text_bytes, "text over the limit");
        }
    }
});
