//! Bounds on what a PDF may make the extractor do, checked before `lopdf`/`pdf-extract` touch
//! it: neither limits how far a stream inflates, so a few kilobytes of chained `/FlateDecode`
//! streams would otherwise become gigabytes in memory.
//!
//! Every indirect object in the file (found by its `N G obj` header, whatever the
//! cross-reference table says) is parsed with `lopdf`'s own parser, and every stream is decoded
//! here with bounded decoders, filter by filter, in the order and with the parameters `lopdf`
//! would use. When the stream's length is not a plain number the rest of the file is decoded
//! instead: the decoders stop at the end of their data and a truncated input only ever yields a
//! prefix of the output, so the bound holds for any length `lopdf` may settle on.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::time::Instant;

use lopdf::xref::XrefEntry;
use lopdf::{Dictionary, Document, Object, ObjectId, Reader, Stream};

use super::extract::{ExtractError, Limits};

/// More filters than this on one stream serve no purpose but inflating it.
pub const MAX_FILTERS: usize = 4;
/// Indirect objects in one PDF; each costs the parser memory even when it is tiny.
pub const MAX_OBJECTS: usize = 200_000;
/// Form XObjects drawn inside one another (`Do`), and form drawings per page.
pub const MAX_FORM_DEPTH: usize = 16;
pub const MAX_FORM_CALLS: usize = 10_000;

/// What the checks learnt: the decoded size of each stream, by object id.
pub struct Inspection {
    decoded: HashMap<ObjectId, usize>,
}

fn limit(message: String) -> ExtractError {
    ExtractError::Limit(message)
}

fn mib(bytes: usize) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}

/// Checks every stream of the file against the limits, before the file is loaded.
pub fn inspect(
    bytes: &[u8],
    limits: &Limits,
    deadline: Instant,
) -> Result<Inspection, ExtractError> {
    if is_encrypted(bytes) {
        // Encrypted streams can only be measured after decryption, which lopdf does while
        // loading, together with unbounded decompression.
        return Err(ExtractError::Pdf(
            "it is encrypted (encrypted PDFs are not supported)".to_string(),
        ));
    }
    let headers = object_headers(bytes);
    if headers.len() > MAX_OBJECTS {
        return Err(limit(format!(
            "the PDF has more than {MAX_OBJECTS} objects"
        )));
    }
    // lopdf loads one object per cross-reference entry, before `check_document` can count them:
    // a table listing one offset a million times made it parse a million copies (40 s, and the
    // memory to hold them), so the entries are counted first.
    let mut xref_entries = classic_xref_entries(bytes);
    let too_many_entries = || {
        limit(format!(
            "the PDF's cross-reference tables list more than {MAX_OBJECTS} objects"
        ))
    };
    if xref_entries > MAX_OBJECTS {
        return Err(too_many_entries());
    }
    let new_reader = || Reader {
        buffer: bytes,
        document: Document::new(),
        encryption_state: None,
        raw_objects: Default::default(),
        password: None,
        strict: false,
    };
    // Each object is parsed on its own, so that a length given by reference stays unresolved
    // and the stream's data start is known; `full` resolves such lengths (against the last
    // header of each object) only to size unfiltered streams.
    let mut reader = new_reader();
    let mut full = new_reader();
    for &((number, generation), offset) in &headers {
        if let Ok(offset) = u32::try_from(offset) {
            let entry = XrefEntry::Normal { offset, generation };
            full.document.reference_table.insert(number, entry);
        }
    }
    let mut budget = Budget { limits, used: 0 };
    let mut decoded = HashMap::new();
    for (id, offset) in headers {
        if Instant::now() > deadline {
            return Err(ExtractError::Timeout);
        }
        let Ok(offset) = u32::try_from(offset) else {
            break;
        };
        let table = &mut reader.document.reference_table;
        table.clear();
        table.insert(
            id.0,
            XrefEntry::Normal {
                offset,
                generation: id.1,
            },
        );
        let Ok(Object::Stream(stream)) = reader.get_object(id, &mut HashSet::new()) else {
            continue;
        };
        xref_entries = xref_entries.saturating_add(xref_stream_entries(&stream.dict));
        if xref_entries > MAX_OBJECTS {
            return Err(too_many_entries());
        }
        let size = match stream.start_position {
            // The length is a reference: where the real cross-reference table sends it is not
            // known here, so everything from the start of the data to the end of the file counts.
            Some(start) => {
                let data = bytes.get(start..).unwrap_or_default();
                if stream.dict.has(b"Filter") {
                    decode_chain(&stream.dict, data, &mut budget)?
                } else {
                    let length = stream
                        .dict
                        .get(b"Length")
                        .and_then(Object::as_reference)
                        .and_then(|length| full.get_object(length, &mut HashSet::new()))
                        .and_then(|length| length.as_i64())
                        .ok()
                        .and_then(|length| usize::try_from(length).ok())
                        .map_or(data.len(), |length| length.min(data.len()));
                    budget.spend(length)?;
                    length
                }
            }
            None => {
                budget.spend(stream.content.len())?;
                decode_chain(&stream.dict, &stream.content, &mut budget)?
            }
        };
        // A cross-reference offset pointing into the number (at the `2` of `12 0 obj`) makes
        // lopdf read the same object under the shorter number.
        let mut modulus = 10u64;
        let mut number = Some(id.0);
        while let Some(n) = number {
            let entry = decoded.entry((n, id.1)).or_insert(0);
            *entry = size.max(*entry);
            number = (u64::from(id.0) >= modulus)
                .then(|| u32::try_from(u64::from(id.0) % modulus).ok())
                .flatten();
            modulus = modulus.saturating_mul(10);
        }
    }
    Ok(Inspection { decoded })
}

/// Checks the loaded document: object and page counts.
pub fn check_document(doc: &Document, limits: &Limits) -> Result<(), ExtractError> {
    if doc.objects.len() > MAX_OBJECTS {
        return Err(limit(format!(
            "the PDF has more than {MAX_OBJECTS} objects"
        )));
    }
    let pages = doc.page_iter().take(limits.max_pages + 1).count();
    if pages > limits.max_pages {
        return Err(limit(format!(
            "the PDF has more than {} pages (EXTRACT_MAX_PAGES)",
            limits.max_pages
        )));
    }
    Ok(())
}

/// Checks what drawing one page costs: its content streams (an array may name the same stream
/// many times) and every form XObject it draws, recursively, as `pdf-extract` resolves them.
pub fn check_page(
    doc: &Document,
    inspection: &Inspection,
    page_id: ObjectId,
    limits: &Limits,
    deadline: Instant,
) -> Result<(), ExtractError> {
    let mut walk = FormWalk {
        doc,
        inspection,
        limits,
        deadline,
        bytes: 0,
        calls: 0,
        names: HashMap::new(),
    };
    for id in doc.get_page_contents(page_id) {
        walk.add_bytes(inspection.size(id))?;
    }
    let Some(resources) = page_resources(doc, page_id) else {
        return Ok(());
    };
    let content = doc.get_page_content(page_id).unwrap_or_default();
    for name in do_names(&content) {
        walk.draw(resources, &name, 1)?;
    }
    Ok(())
}

impl Inspection {
    fn size(&self, id: ObjectId) -> usize {
        self.decoded.get(&id).copied().unwrap_or(0)
    }
}

struct Budget<'a> {
    limits: &'a Limits,
    used: usize,
}

impl Budget<'_> {
    /// Counts bytes the extractor will hold or produce against the per-document limit.
    fn spend(&mut self, bytes: usize) -> Result<(), ExtractError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limits.max_document_bytes {
            return Err(limit(format!(
                "the PDF's streams decode to more than {} (EXTRACT_MAX_DOCUMENT_BYTES)",
                mib(self.limits.max_document_bytes)
            )));
        }
        Ok(())
    }

    fn stream_limit(&self) -> usize {
        self.limits.max_stream_bytes
    }
}

/// Decodes a stream the way `lopdf::Stream::decompressed_content` does, within the limits. An
/// unsupported filter ends the chain, as it ends lopdf's (with an error, before decoding).
/// Returns the decoded size.
fn decode_chain(
    dict: &Dictionary,
    data: &[u8],
    budget: &mut Budget,
) -> Result<usize, ExtractError> {
    let filters: Vec<&[u8]> = match dict.get(b"Filter") {
        Ok(Object::Name(name)) => vec![name.as_slice()],
        Ok(Object::Array(items)) => {
            let names: Option<Vec<&[u8]>> = items.iter().map(|item| item.as_name().ok()).collect();
            // lopdf leaves a stream whose filter array holds anything else undecoded.
            names.unwrap_or_default()
        }
        _ => Vec::new(),
    };
    if filters.len() > MAX_FILTERS {
        return Err(limit(format!(
            "a PDF stream has {} filters (at most {MAX_FILTERS} are accepted)",
            filters.len()
        )));
    }
    let params = dict.get(b"DecodeParms").and_then(Object::as_dict).ok();
    let max = budget.stream_limit();
    let mut output: Option<Vec<u8>> = None;
    for filter in filters {
        let input = output.as_deref().unwrap_or(data);
        let decoded = match filter {
            b"FlateDecode" => predictor(inflate(input, max)?, params),
            b"LZWDecode" => predictor(lzw(input, params, max)?, params),
            b"ASCII85Decode" => ascii85(input, max)?,
            _ => break,
        };
        budget.spend(decoded.len())?;
        output = Some(decoded);
    }
    Ok(output.map_or(data.len(), |output| output.len()))
}

fn too_big(max: usize) -> ExtractError {
    limit(format!(
        "a PDF stream decodes to more than {} (EXTRACT_MAX_STREAM_BYTES)",
        mib(max)
    ))
}

/// Reads at most `max` bytes from a decoder; more is an error. A decoding error keeps what was
/// decoded so far, as lopdf does.
fn read_bounded(decoder: impl Read, max: usize) -> Result<Vec<u8>, ExtractError> {
    let mut output = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    // An error mid-stream leaves the bytes read so far in `output`, which is what counts.
    let _ = decoder.take(limit).read_to_end(&mut output);
    if output.len() > max {
        return Err(too_big(max));
    }
    Ok(output)
}

/// zlib, falling back to raw deflate after the two header bytes when zlib yields nothing (as
/// lopdf does for streams with a broken checksum).
pub fn inflate(input: &[u8], max: usize) -> Result<Vec<u8>, ExtractError> {
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let output = read_bounded(flate2::read::ZlibDecoder::new(input), max)?;
    if output.is_empty() && input.len() > 2 {
        return read_bounded(flate2::read::DeflateDecoder::new(&input[2..]), max);
    }
    Ok(output)
}

fn lzw(input: &[u8], params: Option<&Dictionary>, max: usize) -> Result<Vec<u8>, ExtractError> {
    use weezl::{BitOrder, LzwStatus, decode::Decoder};
    let early_change = params
        .and_then(|p| p.get(b"EarlyChange").ok())
        .and_then(|p| p.as_i64().ok())
        .is_none_or(|v| v != 0);
    let mut decoder = if early_change {
        Decoder::with_tiff_size_switch(BitOrder::Msb, 8)
    } else {
        Decoder::new(BitOrder::Msb, 8)
    };
    let mut output = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    let mut input = input;
    loop {
        let result = decoder.decode_bytes(input, &mut buffer);
        input = &input[result.consumed_in..];
        output.extend_from_slice(&buffer[..result.consumed_out]);
        if output.len() > max {
            return Err(too_big(max));
        }
        match result.status {
            Ok(LzwStatus::Ok) => {}
            Ok(LzwStatus::Done | LzwStatus::NoProgress) | Err(_) => return Ok(output),
        }
    }
}

/// ASCII85 turns at most one byte (`z`) into four, so decoding cannot run away; lopdf's decoder
/// does it (on a copy of the stream with that one filter).
fn ascii85(input: &[u8], max: usize) -> Result<Vec<u8>, ExtractError> {
    // Decoding stops at the `~>` end marker (or before, at any other character outside the
    // alphabet): only what comes before it is copied, not the rest of the file.
    let end = input
        .iter()
        .position(|&b| b == b'~')
        .map_or(input.len(), |at| (at + 2).min(input.len()));
    let input = &input[..end];
    if input.len().saturating_mul(4) > max.saturating_mul(5) {
        return Err(too_big(max));
    }
    let mut dict = Dictionary::new();
    dict.set("Filter", "ASCII85Decode");
    let output = Stream::new(dict, input.to_vec())
        .decompressed_content()
        .unwrap_or_default();
    if output.len() > max {
        return Err(too_big(max));
    }
    Ok(output)
}

/// The PNG predictors lopdf applies after Flate and LZW (never larger than their input).
fn predictor(data: Vec<u8>, params: Option<&Dictionary>) -> Vec<u8> {
    let Some(params) = params else {
        return data;
    };
    let get =
        |key: &[u8], default: i64| params.get(key).and_then(Object::as_i64).unwrap_or(default);
    if !(10..=15).contains(&get(b"Predictor", 1)) {
        return data;
    }
    let columns = usize::try_from(get(b"Columns", 1).max(1)).unwrap_or(1);
    let colors = usize::try_from(get(b"Colors", 1).max(1)).unwrap_or(1);
    let bits = usize::try_from(get(b"BitsPerComponent", 8).max(8)).unwrap_or(8);
    let bytes_per_pixel = colors.saturating_mul(bits) / 8;
    // A malformed predictor fails lopdf's decoding too; nothing is left to measure then.
    lopdf::filters::png::decode_frame(&data, bytes_per_pixel, columns).unwrap_or_default()
}

/// Whether the file names an `/Encrypt` dictionary anywhere (names may hide letters as `#xx`).
fn is_encrypted(bytes: &[u8]) -> bool {
    let mut i = 0;
    while let Some(at) = bytes[i..].iter().position(|&b| b == b'/') {
        let start = i + at + 1;
        let end = bytes[start..]
            .iter()
            .position(|&b| is_whitespace(b) || is_delimiter(b))
            .map_or(bytes.len(), |n| start + n);
        if end - start <= 3 * "Encrypt".len() && decode_name(&bytes[start..end]) == b"Encrypt" {
            return true;
        }
        i = end.max(start);
        if i >= bytes.len() {
            return false;
        }
    }
    false
}

fn decode_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'#'
            && let Some(byte) = raw
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\0')
}

fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%'
    )
}

/// lopdf's `space`: whitespace and comments, possibly none.
fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        if is_whitespace(bytes[i]) {
            i += 1;
        } else if bytes[i] == b'%' {
            while i < bytes.len() && !matches!(bytes[i], b'\r' | b'\n') {
                i += 1;
            }
        } else {
            break;
        }
    }
    i
}

fn digits(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(bytes.len(), |n| i + n)
}

/// An upper bound on the entries of the file's classic cross-reference tables: the `n` and `f`
/// tokens between each `xref` and the `trailer` after it.
fn classic_xref_entries(bytes: &[u8]) -> usize {
    let mut entries = 0usize;
    let mut in_table = false;
    for token in bytes
        .split(|&b| is_whitespace(b) || is_delimiter(b))
        .filter(|t| !t.is_empty())
    {
        match token {
            b"xref" => in_table = true,
            b"trailer" => in_table = false,
            b"n" | b"f" if in_table => entries += 1,
            _ => {}
        }
    }
    entries
}

/// The entries a cross-reference stream declares: the counts of its `/Index` pairs, or `/Size`.
fn xref_stream_entries(dict: &Dictionary) -> usize {
    let is_xref = dict
        .get(b"Type")
        .and_then(Object::as_name)
        .is_ok_and(|name| name == b"XRef");
    if !is_xref {
        return 0;
    }
    let count = |object: &Object| {
        object
            .as_i64()
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
    };
    match dict.get(b"Index").and_then(Object::as_array) {
        Ok(index) => index
            .iter()
            .skip(1)
            .step_by(2)
            .map(count)
            .fold(0, usize::saturating_add),
        Err(_) => dict.get(b"Size").map(count).unwrap_or(0),
    }
}

/// Every `N G obj` header in the file, with the offset lopdf would be given for it. A header
/// whose object number does not fit is read from the last digits that do, as lopdf would when
/// a cross-reference offset points into the number.
fn object_headers(bytes: &[u8]) -> Vec<(ObjectId, usize)> {
    let mut headers = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let number_end = digits(bytes, i);
        let mut start = i;
        let number = loop {
            match std::str::from_utf8(&bytes[start..number_end])
                .ok()
                .and_then(|n| n.parse::<u32>().ok())
            {
                Some(n) => break Some(n),
                None if start + 1 < number_end => start += 1,
                None => break None,
            }
        };
        i = number_end;
        let Some(number) = number else { continue };
        let generation_start = skip_space(bytes, number_end);
        let generation_end = digits(bytes, generation_start);
        if generation_end == generation_start {
            continue;
        }
        let Some(generation) = std::str::from_utf8(&bytes[generation_start..generation_end])
            .ok()
            .and_then(|g| g.parse::<u16>().ok())
        else {
            continue;
        };
        let keyword = skip_space(bytes, generation_end);
        if bytes[keyword..].starts_with(b"obj") {
            headers.push(((number, generation), start));
        }
    }
    headers
}

fn page_resources(doc: &Document, page_id: ObjectId) -> Option<&Dictionary> {
    let mut node = doc.get_dictionary(page_id).ok()?;
    // Resources are inherited down the page tree, as pdf-extract resolves them.
    for _ in 0..64 {
        if let Ok(resources) = node.get_deref(b"Resources", doc).and_then(Object::as_dict) {
            return Some(resources);
        }
        node = node
            .get_deref(b"Parent", doc)
            .and_then(Object::as_dict)
            .ok()?;
    }
    None
}

/// The names drawn with `Do` in a content stream.
fn do_names(content: &[u8]) -> Vec<Vec<u8>> {
    let Ok(content) = lopdf::content::Content::decode(content) else {
        return Vec::new();
    };
    content
        .operations
        .into_iter()
        .filter(|op| op.operator == "Do")
        .filter_map(|op| op.operands.first()?.as_name().ok().map(<[u8]>::to_vec))
        .collect()
}

struct FormWalk<'a> {
    doc: &'a Document,
    inspection: &'a Inspection,
    limits: &'a Limits,
    deadline: Instant,
    bytes: usize,
    calls: usize,
    names: HashMap<ObjectId, Vec<Vec<u8>>>,
}

impl<'a> FormWalk<'a> {
    fn add_bytes(&mut self, bytes: usize) -> Result<(), ExtractError> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.limits.max_document_bytes {
            return Err(limit(format!(
                "a PDF page draws more than {} of content (EXTRACT_MAX_DOCUMENT_BYTES)",
                mib(self.limits.max_document_bytes)
            )));
        }
        Ok(())
    }

    /// `/name Do` with `resources`: pdf-extract draws the named form with its own resources, or
    /// the caller's when it has none.
    fn draw(
        &mut self,
        resources: &'a Dictionary,
        name: &[u8],
        depth: usize,
    ) -> Result<(), ExtractError> {
        let Some((id, stream)) = resources
            .get_deref(b"XObject", self.doc)
            .and_then(Object::as_dict)
            .ok()
            .and_then(|xobjects| xobjects.get(name).ok())
            .and_then(|object| object.as_reference().ok())
            .and_then(|id| Some((id, self.doc.get_object(id).ok()?.as_stream().ok()?)))
        else {
            return Ok(());
        };
        self.calls += 1;
        if depth > MAX_FORM_DEPTH || self.calls > MAX_FORM_CALLS {
            return Err(limit(format!(
                "a PDF page draws forms more than {MAX_FORM_DEPTH} deep or more than \
                 {MAX_FORM_CALLS} times"
            )));
        }
        if Instant::now() > self.deadline {
            return Err(ExtractError::Timeout);
        }
        self.add_bytes(self.inspection.size(id))?;
        let inner = stream
            .dict
            .get_deref(b"Resources", self.doc)
            .and_then(Object::as_dict)
            .unwrap_or(resources);
        let names = match self.names.get(&id) {
            Some(names) => names.clone(),
            None => {
                // Sizes were checked by `inspect`, so decoding here is bounded.
                let content = stream.decompressed_content().unwrap_or_default();
                let names = do_names(&content);
                self.names.insert(id, names.clone());
                names
            }
        };
        for name in names {
            self.draw(inner, &name, depth + 1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::ZlibEncoder;
    use std::io::Write;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// A PDF whose cross-reference table lists the catalog `entries` times.
    fn pdf_listing_one_object(entries: usize) -> Vec<u8> {
        let mut pdf = b"%PDF-1.4\n".to_vec();
        let catalog = pdf.len();
        pdf.extend_from_slice(b"1 0 obj\n<< /Type /Catalog >>\nendobj\n");
        let xref = pdf.len();
        pdf.extend_from_slice(format!("xref\n0 {entries}\n").as_bytes());
        for _ in 0..entries {
            pdf.extend_from_slice(format!("{catalog:010} 00000 n \n").as_bytes());
        }
        pdf.extend_from_slice(
            format!("trailer\n<< /Size {entries} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n")
                .as_bytes(),
        );
        pdf
    }

    #[test]
    fn cross_reference_tables_listing_too_many_objects_are_refused_before_loading() {
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let refused = inspect(&pdf_listing_one_object(MAX_OBJECTS + 1), &limits(), far).err();
        assert!(
            matches!(&refused, Some(ExtractError::Limit(m)) if m.contains("cross-reference")),
            "{refused:?}"
        );
        assert!(inspect(&pdf_listing_one_object(3), &limits(), far).is_ok());
    }

    #[test]
    fn cross_reference_streams_are_counted_by_index_or_size() {
        let dict = |entries: Vec<(&str, Object)>| {
            let mut dict = Dictionary::new();
            for (key, value) in entries {
                dict.set(key, value);
            }
            dict
        };
        let xref = || ("Type", Object::Name(b"XRef".to_vec()));
        assert_eq!(
            xref_stream_entries(&dict(vec![xref(), ("Size", 7.into())])),
            7
        );
        let index = Object::Array(vec![0.into(), 5.into(), 100.into(), 1_000_000.into()]);
        assert_eq!(
            xref_stream_entries(&dict(vec![xref(), ("Size", 7.into()), ("Index", index)])),
            1_000_005
        );
        assert_eq!(
            xref_stream_entries(&dict(vec![("Size", 7.into())])),
            0,
            "not an XRef stream"
        );
    }

    fn limits() -> Limits {
        Limits {
            max_stream_bytes: 1024 * 1024,
            max_document_bytes: 4 * 1024 * 1024,
            ..Limits::default()
        }
    }

    #[test]
    fn inflate_stops_at_the_limit() {
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let compressed = deflate(&zeros);
        assert!(compressed.len() < 10_000);
        assert_eq!(
            inflate(&compressed, 4 * 1024 * 1024).unwrap().len(),
            zeros.len()
        );
        let error = inflate(&compressed, 1024 * 1024).unwrap_err();
        assert!(matches!(error, ExtractError::Limit(_)), "{error:?}");
        assert!(
            error.to_string().contains("EXTRACT_MAX_STREAM_BYTES"),
            "{error}"
        );
    }

    #[test]
    fn inflate_keeps_what_a_broken_stream_yields() {
        let compressed = deflate(b"BT (Hello) Tj ET");
        assert_eq!(inflate(&compressed, 100).unwrap(), b"BT (Hello) Tj ET");
        // A broken checksum: lopdf falls back to raw deflate, and so does the check.
        let mut broken = compressed.clone();
        let n = broken.len();
        broken[n - 1] ^= 0xFF;
        assert_eq!(inflate(&broken, 100).unwrap(), b"BT (Hello) Tj ET");
        assert_eq!(inflate(b"not zlib at all", 100).unwrap(), b"");
        assert_eq!(inflate(b"", 100).unwrap(), b"");
    }

    #[test]
    fn chained_filters_are_decoded_in_turn_and_bounded() {
        let mut data = vec![b' '; 2 * 1024 * 1024];
        for _ in 0..3 {
            data = deflate(&data);
        }
        let mut dict = Dictionary::new();
        dict.set("Filter", vec![Object::from("FlateDecode"); 3]);
        let limits = limits();
        let mut budget = Budget {
            limits: &limits,
            used: 0,
        };
        let error = decode_chain(&dict, &data, &mut budget).unwrap_err();
        assert!(
            error.to_string().contains("EXTRACT_MAX_STREAM_BYTES"),
            "{error}"
        );

        let generous = Limits {
            max_stream_bytes: 4 * 1024 * 1024,
            ..limits
        };
        let mut budget = Budget {
            limits: &generous,
            used: 0,
        };
        assert_eq!(
            decode_chain(&dict, &data, &mut budget).unwrap(),
            2 * 1024 * 1024
        );
        assert!(budget.used >= 2 * 1024 * 1024);

        dict.set("Filter", vec![Object::from("FlateDecode"); 5]);
        let error = decode_chain(&dict, &data, &mut budget).unwrap_err();
        assert!(error.to_string().contains("5 filters"), "{error}");
    }

    #[test]
    fn the_document_budget_adds_up_streams() {
        let limits = limits();
        let mut budget = Budget {
            limits: &limits,
            used: 0,
        };
        let mut dict = Dictionary::new();
        dict.set("Filter", "FlateDecode");
        let stream = deflate(&vec![0u8; 1024 * 1024]);
        for _ in 0..4 {
            decode_chain(&dict, &stream, &mut budget).unwrap();
        }
        let error = decode_chain(&dict, &stream, &mut budget).unwrap_err();
        assert!(
            error.to_string().contains("EXTRACT_MAX_DOCUMENT_BYTES"),
            "{error}"
        );
    }

    #[test]
    fn lzw_is_bounded() {
        let data = vec![b'a'; 2 * 1024 * 1024];
        let mut encoder = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
        let compressed = encoder.encode(&data).unwrap();
        assert_eq!(lzw(&compressed, None, 4 * 1024 * 1024).unwrap(), data);
        assert!(matches!(
            lzw(&compressed, None, 1024 * 1024).unwrap_err(),
            ExtractError::Limit(_)
        ));
    }

    #[test]
    fn ascii85_decodes_up_to_its_end_marker() {
        let encoded = b"87cURD]i,\"Ebo80~>";
        assert_eq!(ascii85(encoded, 100).unwrap(), b"Hello World!");
        let mut rest_of_file = encoded.to_vec();
        rest_of_file.extend_from_slice(b"\nendstream\nendobj\n9 0 obj 87cURD]i endobj");
        assert_eq!(ascii85(&rest_of_file, 100).unwrap(), b"Hello World!");
        assert!(matches!(
            ascii85(b"zzzz~>", 8).unwrap_err(),
            ExtractError::Limit(_)
        ));
    }

    #[test]
    fn unsupported_filters_end_the_chain() {
        let mut dict = Dictionary::new();
        dict.set(
            "Filter",
            vec![Object::from("DCTDecode"), Object::from("FlateDecode")],
        );
        let limits = limits();
        let mut budget = Budget {
            limits: &limits,
            used: 0,
        };
        let bomb = deflate(&vec![0u8; 8 * 1024 * 1024]);
        assert_eq!(decode_chain(&dict, &bomb, &mut budget).unwrap(), bomb.len());
    }

    #[test]
    fn headers_are_found_where_lopdf_would_read_them() {
        let pdf =
            b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n2 0%c\nobj 3\n99999999999 0 obj\n4 0 R 12 x obj";
        let headers: Vec<ObjectId> = object_headers(pdf).into_iter().map(|(id, _)| id).collect();
        assert_eq!(headers, [(1, 0), (2, 0), (999_999_999, 0)]);
    }

    #[test]
    fn a_stream_is_sized_under_every_number_lopdf_may_read_it_as() {
        let content = deflate(&vec![b' '; 1000]);
        let mut pdf = format!(
            "%PDF-1.4\n123 0 obj\n<< /Length {} /Filter /FlateDecode >>\nstream\n",
            content.len()
        )
        .into_bytes();
        pdf.extend_from_slice(&content);
        pdf.extend_from_slice(b"\nendstream\nendobj\n");
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let inspection = inspect(&pdf, &limits(), far).unwrap();
        for number in [123, 23, 3] {
            assert_eq!(inspection.size((number, 0)), 1000, "{number}");
        }
        assert_eq!(inspection.size((12, 0)), 0);
    }

    #[test]
    fn encryption_is_seen_through_name_escapes() {
        assert!(is_encrypted(b"trailer << /Root 1 0 R /Encrypt 5 0 R >>"));
        assert!(is_encrypted(b"<</Encr#79pt 5 0 R>>"));
        assert!(!is_encrypted(
            b"<< /Encrypted false /EncryptMetadata true >> (Encrypt)"
        ));
    }
}
