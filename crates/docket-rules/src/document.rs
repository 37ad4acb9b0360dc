//! Documents as the knowledge base receives them: which format an upload is ([`Format`]).

/// The document formats the knowledge base understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
}

impl Format {
    /// Works out the format of an upload.
    ///
    /// Bytes starting with the `%PDF-` magic are a PDF whatever the client claims. Otherwise a
    /// specific content type (`text/markdown`, `text/x-markdown`, `text/html`,
    /// `application/xhtml+xml`, `application/pdf`; parameters such as `; charset=utf-8` are
    /// ignored) wins; a missing, generic (`application/octet-stream`) or plain-text content type
    /// defers to the file name extension (`.md`, `.markdown`, `.txt`, `.text`, `.html`, `.htm`,
    /// `.pdf`, case-insensitive), because browsers routinely label `.md` files `text/plain` or
    /// `application/octet-stream`. `text/plain` with no recognised extension is `Text`.
    /// Anything else is `None`.
    pub fn detect(
        content_type: Option<&str>,
        filename: Option<&str>,
        bytes: &[u8],
    ) -> Option<Format> {
        if bytes.starts_with(b"%PDF-") {
            return Some(Format::Pdf);
        }
        let essence = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|ct| ct.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match essence.as_str() {
            "text/markdown" | "text/x-markdown" => return Some(Format::Markdown),
            "text/html" | "application/xhtml+xml" => return Some(Format::Html),
            "application/pdf" | "application/x-pdf" => return Some(Format::Pdf),
            _ => {}
        }
        if let Some(format) = filename.and_then(Format::from_extension) {
            return Some(format);
        }
        (essence == "text/plain").then_some(Format::Text)
    }

    fn from_extension(filename: &str) -> Option<Format> {
        let name = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
        let (stem, extension) = name.rsplit_once('.')?;
        if stem.is_empty() {
            // A dot file such as `.md` has no extension, only a name.
            return None;
        }
        match extension.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Some(Format::Markdown),
            "txt" | "text" => Some(Format::Text),
            "html" | "htm" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            _ => None,
        }
    }

    /// The canonical content type of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain",
            Format::Markdown => "text/markdown",
            Format::Html => "text/html",
            Format::Pdf => "application/pdf",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Content type, file name, bytes, expected format.
    type Case = (
        Option<&'static str>,
        Option<&'static str>,
        &'static [u8],
        Option<Format>,
    );

    #[test]
    fn detect_table() {
        let pdf = b"%PDF-1.7\n...";
        let cases: &[Case] = &[
            (Some("text/plain"), None, b"hi", Some(Format::Text)),
            (
                Some("text/plain; charset=utf-8"),
                Some("notes.txt"),
                b"hi",
                Some(Format::Text),
            ),
            (
                Some("text/markdown; charset=utf-8"),
                None,
                b"# hi",
                Some(Format::Markdown),
            ),
            (Some("Text/Markdown"), None, b"# hi", Some(Format::Markdown)),
            (
                Some("text/x-markdown"),
                None,
                b"# hi",
                Some(Format::Markdown),
            ),
            (Some("text/html"), None, b"<p>hi", Some(Format::Html)),
            (
                Some("application/xhtml+xml"),
                None,
                b"<p>hi",
                Some(Format::Html),
            ),
            (
                Some("application/pdf"),
                None,
                b"not really",
                Some(Format::Pdf),
            ),
            // Generic or plain content types defer to the extension.
            (
                Some("text/plain"),
                Some("README.md"),
                b"# hi",
                Some(Format::Markdown),
            ),
            (
                Some("application/octet-stream"),
                Some("guide.MARKDOWN"),
                b"# hi",
                Some(Format::Markdown),
            ),
            (None, Some("page.htm"), b"<p>hi", Some(Format::Html)),
            (None, Some("dir/page.HTML"), b"<p>hi", Some(Format::Html)),
            (None, Some("notes.txt"), b"hi", Some(Format::Text)),
            (None, Some("scan.pdf"), b"junk", Some(Format::Pdf)),
            // A specific content type beats the extension.
            (
                Some("text/html"),
                Some("page.md"),
                b"<p>hi",
                Some(Format::Html),
            ),
            // The magic bytes beat everything.
            (
                Some("text/plain"),
                Some("policy.txt"),
                pdf,
                Some(Format::Pdf),
            ),
            (Some("image/png"), Some("photo.png"), pdf, Some(Format::Pdf)),
            (None, None, pdf, Some(Format::Pdf)),
            // Unknown.
            (None, None, b"hello", None),
            (Some("image/png"), Some("photo.png"), b"\x89PNG", None),
            (
                Some("application/octet-stream"),
                Some("data.bin"),
                b"\0\0",
                None,
            ),
            (Some("application/json"), None, b"{}", None),
            (None, Some(".md"), b"# hi", None),
            (None, Some("Makefile"), b"all:", None),
        ];
        for (content_type, filename, bytes, expected) in cases {
            assert_eq!(
                Format::detect(*content_type, *filename, bytes),
                *expected,
                "{content_type:?} {filename:?}"
            );
        }
    }

    #[test]
    fn content_types_are_canonical_and_round_trip() {
        for format in [Format::Text, Format::Markdown, Format::Html, Format::Pdf] {
            let bytes: &[u8] = if format == Format::Pdf {
                b"%PDF-1.4"
            } else {
                b"x"
            };
            assert_eq!(
                Format::detect(Some(format.content_type()), None, bytes),
                Some(format)
            );
        }
        assert_eq!(Format::Markdown.content_type(), "text/markdown");
        assert_eq!(Format::Pdf.content_type(), "application/pdf");
    }
}
