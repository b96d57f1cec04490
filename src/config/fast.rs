//! The fast path for many `[[secrets]]` tables: a small scanner that splits the document
//! text into the `[[secrets]]` entries written in the simple form and everything else.
//!
//! A million `[[secrets]]` tables are a hundred megabytes of text; as a spanned TOML tree
//! they are gigabytes, and parsing, walking and deserializing that tree takes tens of
//! seconds. Almost every such table is a few lines of `key = "string"`:
//!
//! ```toml
//! [[secrets]]
//! tenant = "acme"
//! key = "db"            # comments and blank lines are fine
//! policy = "tenant_db"
//! target = { type = "none" }
//! ```
//!
//! [`split`] finds every `[[secrets]]` entry with a lexer that knows where strings,
//! comments, arrays and headers are (so a `[[secrets]]` line inside a multi-line string is
//! not one), and takes an entry when its body holds only the keys `tenant`, `key` and
//! `policy` with single-line strings and `target` with a single-line inline table, each at
//! most once. The rest of the document, including every entry the scanner does not fully
//! understand (another key, another type, a `[secrets.target]` sub-table, a dotted key, a
//! TOML 1.1 escape), is the *residual* document, which goes through the TOML parser, the
//! schema walk and serde exactly as a whole document would; its spans are moved back to
//! where its pieces are in the original text ([`Residual::restore_spans`]), so every
//! message names the same line and column. A taken entry is read again from the text when
//! stage two validates it (`sets.rs`), with the same functions the residual's entries go
//! through; its inline `target` is parsed by the TOML parser itself, its spans moved to
//! the entry's place, and checked by the same schema walk.
//!
//! The scanner gives up on the whole document (every entry goes the slow way) when the
//! document's shape is one it does not follow: a quoted first key in a header, a
//! `[secrets.*]` table before any `[[secrets]]`, a root key that could be `secrets`, or
//! text the lexer cannot end (an unterminated string or array). A document whose residual
//! does not parse is checked whole, the slow way, so its syntax errors are the parser's.

use std::collections::HashSet;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// The document split into the entries the scanner takes and the residual document.
pub(super) struct Split<'t> {
    pub(super) text: &'t str,
    /// The document without the taken entries.
    pub(super) residual: Residual,
    /// Every `[[secrets]]` entry in document order: `Some(section)` when the scanner took
    /// it (its header's line start to the next header's), `None` when it is in the residual.
    pub(super) entries: Vec<Option<(u32, u32)>>,
}

impl Split<'_> {
    /// The index of each residual `[[secrets]]` entry among all of them.
    pub(super) fn residual_indices(&self) -> Vec<u32> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_none())
            .map(|(i, _)| i as u32)
            .collect()
    }
}

/// The text the scanner left, and where each of its pieces came from.
pub(super) struct Residual {
    pub(super) text: String,
    /// `(offset in the residual, offset in the document)` of each piece, in order.
    pieces: Vec<(usize, usize)>,
}

impl Residual {
    /// The document offset of residual offset `at`.
    fn offset(&self, at: usize) -> usize {
        let i = self.pieces.partition_point(|(start, _)| *start <= at);
        match i.checked_sub(1).and_then(|i| self.pieces.get(i)) {
            Some((start, original)) => original + (at - start),
            None => at,
        }
    }

    /// Moves every span of `doc`, parsed from the residual text, to the same text in the
    /// document.
    pub(super) fn restore_spans<'i>(&self, doc: Spanned<DeTable<'i>>) -> Spanned<DeTable<'i>> {
        let span = doc.span();
        let table = shift_table(doc.into_inner(), &|r| self.span(r));
        Spanned::new(span, table)
    }

    fn span(&self, r: Range<usize>) -> Range<usize> {
        if r.is_empty() {
            let at = self.offset(r.start);
            at..at
        } else {
            // The end is one past the last byte, which may start the next piece.
            self.offset(r.start)..self.offset(r.end - 1) + 1
        }
    }
}

/// `value` with every span mapped through `map`.
pub(super) fn shift_value<'i>(
    value: Spanned<DeValue<'i>>,
    map: &dyn Fn(Range<usize>) -> Range<usize>,
) -> Spanned<DeValue<'i>> {
    let span = map(value.span());
    let inner = match value.into_inner() {
        DeValue::Table(table) => DeValue::Table(shift_table(table, map)),
        DeValue::Array(items) => {
            let mut shifted = DeArray::new();
            for item in items {
                shifted.push(shift_value(item, map));
            }
            DeValue::Array(shifted)
        }
        scalar => scalar,
    };
    Spanned::new(span, inner)
}

fn shift_table<'i>(table: DeTable<'i>, map: &dyn Fn(Range<usize>) -> Range<usize>) -> DeTable<'i> {
    let mut shifted = DeTable::new();
    for (key, value) in table {
        let key_span = map(key.span());
        shifted.insert(
            Spanned::new(key_span, key.into_inner()),
            shift_value(value, map),
        );
    }
    shifted
}

/// Splits `text`, or `None` when the scanner takes no entry (none is simple, there are
/// none, or the document's shape is one it does not follow): then the whole document
/// goes the slow way.
pub(super) fn split(text: &str) -> Option<Split<'_>> {
    if text.len() >= u32::MAX as usize {
        return None;
    }
    let sections = sections(text)?;
    let mut residual = Residual {
        text: String::new(),
        pieces: Vec::new(),
    };
    let mut entries = Vec::new();
    let mut known_targets: HashSet<&str> = HashSet::new();
    let mut taken_any = false;
    let mut i = 0;
    while i < sections.len() {
        let section = &sections[i];
        let end = sections.get(i + 1).map_or(text.len(), |s| s.start);
        match section.kind {
            Kind::Root | Kind::Other => {
                keep(&mut residual, text, section.start..end);
                i += 1;
            }
            // A `[secrets.*]` table with no entry before it.
            Kind::Sub => return None,
            Kind::Entry => {
                // The entry and the `[secrets.*]` sub-tables after it, which belong to it.
                let mut last = i + 1;
                while sections.get(last).is_some_and(|s| s.kind == Kind::Sub) {
                    last += 1;
                }
                let group_end = sections.get(last).map_or(text.len(), |s| s.start);
                let simple = last == i + 1
                    && parse_entry(text, section.body..end).is_some_and(|e| {
                        e.target.is_none_or(|t| {
                            let target = &text[t];
                            known_targets.contains(target)
                                || (parses_as_table(target) && known_targets.insert(target))
                        })
                    });
                if simple {
                    entries.push(Some((section.start as u32, end as u32)));
                    taken_any = true;
                } else {
                    entries.push(None);
                    keep(&mut residual, text, section.start..group_end);
                }
                i = last;
            }
        }
    }
    taken_any.then_some(Split {
        text,
        residual,
        entries,
    })
}

fn keep(residual: &mut Residual, text: &str, range: Range<usize>) {
    if range.is_empty() {
        return;
    }
    residual.pieces.push((residual.text.len(), range.start));
    residual.text.push_str(&text[range]);
}

/// Whether `text` (an inline table as written) parses as one.
fn parses_as_table(text: &str) -> bool {
    DeValue::parse(text).is_ok_and(|v| v.get_ref().is_table())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The keys before the first header.
    Root,
    /// `[[secrets]]`.
    Entry,
    /// Any other header whose first key is `secrets`.
    Sub,
    Other,
}

/// A header and the lines up to the next one.
struct Section {
    kind: Kind,
    /// The start of the header's line.
    start: usize,
    /// The start of the line after the header.
    body: usize,
}

/// The document's sections, or `None` when the lexer cannot follow it.
fn sections(text: &str) -> Option<Vec<Section>> {
    let b = text.as_bytes();
    let mut out = vec![Section {
        kind: Kind::Root,
        start: 0,
        body: 0,
    }];
    let mut pos = 0;
    while pos < b.len() {
        let line_start = pos;
        pos = skip_ws(b, pos);
        if b.get(pos) == Some(&b'[') {
            let (kind, next) = header(b, pos)?;
            out.push(Section {
                kind,
                start: line_start,
                body: next,
            });
            pos = next;
        } else {
            if out.len() == 1 && root_key_may_be_secrets(&b[pos..]) {
                return None;
            }
            pos = logical_line(b, pos)?;
        }
    }
    Some(out)
}

fn skip_ws(b: &[u8], mut pos: usize) -> usize {
    while matches!(b.get(pos), Some(b' ' | b'\t')) {
        pos += 1;
    }
    pos
}

fn is_bare(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// Whether a key/value line of the root table could define `secrets` (or is one the
/// scanner does not read: a quoted key).
fn root_key_may_be_secrets(line: &[u8]) -> bool {
    match line.first() {
        Some(b'"' | b'\'') => true,
        _ => line.starts_with(b"secrets") && !line.get(7).is_some_and(|c| is_bare(*c)),
    }
}

/// Reads the header at `pos` (a `[`); its kind and the start of the next line.
fn header(b: &[u8], pos: usize) -> Option<(Kind, usize)> {
    let array = b.get(pos + 1) == Some(&b'[');
    let mut p = pos + if array { 2 } else { 1 };
    let mut keys = 0;
    let mut first_is_secrets = false;
    loop {
        p = skip_ws(b, p);
        let start = p;
        match b.get(p)? {
            b'"' | b'\'' if keys == 0 => return None,
            b'"' => p = basic_string(b, p)?,
            b'\'' => p = literal_string(b, p)?,
            c if is_bare(*c) => {
                while b.get(p).is_some_and(|c| is_bare(*c)) {
                    p += 1;
                }
                if keys == 0 {
                    first_is_secrets = &b[start..p] == b"secrets";
                }
            }
            _ => return None,
        }
        keys += 1;
        p = skip_ws(b, p);
        match b.get(p)? {
            b'.' => p += 1,
            b']' => break,
            _ => return None,
        }
    }
    p += 1;
    if array {
        if b.get(p) != Some(&b']') {
            return None;
        }
        p += 1;
    }
    let next = end_of_line(b, p)?;
    let kind = match (first_is_secrets, array && keys == 1) {
        (true, true) => Kind::Entry,
        (true, false) => Kind::Sub,
        (false, _) => Kind::Other,
    };
    Some((kind, next))
}

/// After a value or header at `pos`: blanks, an optional comment, the line's end. Returns
/// the start of the next line, or `None` for anything else.
fn end_of_line(b: &[u8], pos: usize) -> Option<usize> {
    let mut p = skip_ws(b, pos);
    if b.get(p) == Some(&b'#') {
        while p < b.len() && b[p] != b'\n' {
            // Control characters other than tab are not allowed in a comment; a carriage
            // return only ends the line.
            if is_control(b[p]) && !(b[p] == b'\r' && b.get(p + 1) == Some(&b'\n')) {
                return None;
            }
            if b[p] == b'\r' {
                break;
            }
            p += 1;
        }
    }
    match b.get(p) {
        None => Some(p),
        Some(b'\n') => Some(p + 1),
        Some(b'\r') if b.get(p + 1) == Some(&b'\n') => Some(p + 2),
        _ => None,
    }
}

/// Skips one key/value (or blank or comment) line from `pos`, following strings, comments
/// and brackets, so a value spanning lines counts as one. Returns the next line's start.
fn logical_line(b: &[u8], mut pos: usize) -> Option<usize> {
    let mut depth = 0usize;
    while pos < b.len() {
        match b[pos] {
            b'\n' if depth == 0 => return Some(pos + 1),
            b'#' => {
                while pos < b.len() && b[pos] != b'\n' {
                    pos += 1;
                }
                continue;
            }
            b'"' if b[pos..].starts_with(b"\"\"\"") => {
                pos = multi_line(b, pos, b'"')?;
                continue;
            }
            b'\'' if b[pos..].starts_with(b"'''") => {
                pos = multi_line(b, pos, b'\'')?;
                continue;
            }
            b'"' => {
                pos = basic_string(b, pos)?;
                continue;
            }
            b'\'' => {
                pos = literal_string(b, pos)?;
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.checked_sub(1)?,
            _ => {}
        }
        pos += 1;
    }
    (depth == 0).then_some(pos)
}

/// The end of the multi-line string opening at `pos` (three `quote`s); up to two more
/// quotes right before the closing three belong to the string.
fn multi_line(b: &[u8], pos: usize, quote: u8) -> Option<usize> {
    let mut p = pos + 3;
    while p < b.len() {
        if quote == b'"' && b[p] == b'\\' {
            p += 2;
            continue;
        }
        if b[p] == quote && b.get(p + 1) == Some(&quote) && b.get(p + 2) == Some(&quote) {
            p += 3;
            let mut extra = 0;
            while extra < 2 && b.get(p) == Some(&quote) {
                p += 1;
                extra += 1;
            }
            return Some(p);
        }
        p += 1;
    }
    None
}

/// The end (one past the closing quote) of the single-line basic string at `pos`.
fn basic_string(b: &[u8], pos: usize) -> Option<usize> {
    let mut p = pos + 1;
    while p < b.len() {
        match b[p] {
            b'\\' => p += 2,
            b'"' => return Some(p + 1),
            b'\n' => return None,
            _ => p += 1,
        }
    }
    None
}

/// The end (one past the closing quote) of the single-line literal string at `pos`.
fn literal_string(b: &[u8], pos: usize) -> Option<usize> {
    let mut p = pos + 1;
    while p < b.len() {
        match b[p] {
            b'\'' => return Some(p + 1),
            b'\n' => return None,
            _ => p += 1,
        }
    }
    None
}

/// One string value of a taken entry: its span (quotes included) and whether it is a
/// basic string with escapes (then [`decode`] unescapes it).
#[derive(Debug, Clone)]
pub(super) struct Str {
    pub(super) span: Range<usize>,
    escaped: bool,
}

impl Str {
    /// The string's value.
    pub(super) fn decode<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let inner = &text[self.span.start + 1..self.span.end - 1];
        if !self.escaped {
            return std::borrow::Cow::Borrowed(inner);
        }
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            // `parse_entry` accepted only these escapes, with valid code points.
            match chars.next() {
                Some('b') => out.push('\u{8}'),
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some('f') => out.push('\u{c}'),
                Some('r') => out.push('\r'),
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some(u @ ('u' | 'U')) => {
                    let n = if u == 'u' { 4 } else { 8 };
                    let hex: String = chars.by_ref().take(n).collect();
                    if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        out.push(c);
                    }
                }
                _ => {}
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

/// The keys of a taken `[[secrets]]` entry.
#[derive(Debug, Default)]
pub(super) struct Entry {
    pub(super) tenant: Option<Str>,
    pub(super) key: Option<Str>,
    pub(super) policy: Option<Str>,
    /// The inline table as written, braces included.
    pub(super) target: Option<Range<usize>>,
}

/// The span of the `[[secrets]]` header of the section starting at `start`.
pub(super) fn header_span(text: &str, start: usize) -> Range<usize> {
    let b = text.as_bytes();
    let open = skip_ws(b, start);
    let close = text[open..].find("]]").map_or(open, |i| open + i + 2);
    open..close
}

/// The start of the line after the header of the section starting at `start`.
pub(super) fn body_start(text: &str, start: usize) -> usize {
    text[start..]
        .find('\n')
        .map_or(text.len(), |i| start + i + 1)
}

/// Reads the body of a `[[secrets]]` entry (`range`: from the line after its header to
/// the next header), or `None` when it holds anything but the simple form.
pub(super) fn parse_entry(text: &str, range: Range<usize>) -> Option<Entry> {
    let b = text.as_bytes();
    let mut entry = Entry::default();
    let mut pos = range.start;
    while pos < range.end {
        pos = skip_ws(b, pos);
        if pos >= range.end {
            break;
        }
        match b[pos] {
            b'#' | b'\n' | b'\r' => {
                pos = end_of_line(b, pos)?;
                continue;
            }
            _ => {}
        }
        let key_start = pos;
        while pos < range.end && is_bare(b[pos]) {
            pos += 1;
        }
        let slot = match &b[key_start..pos] {
            b"tenant" => 0,
            b"key" => 1,
            b"policy" => 2,
            b"target" => 3,
            _ => return None,
        };
        pos = skip_ws(b, pos);
        if b.get(pos) != Some(&b'=') {
            return None;
        }
        pos = skip_ws(b, pos + 1);
        if slot == 3 {
            if entry.target.is_some() || b.get(pos) != Some(&b'{') {
                return None;
            }
            let end = inline_table_end(b, pos)?;
            entry.target = Some(pos..end);
            pos = end;
        } else {
            let value = simple_string(b, pos)?;
            pos = value.span.end;
            let field = match slot {
                0 => &mut entry.tenant,
                1 => &mut entry.key,
                _ => &mut entry.policy,
            };
            if field.replace(value).is_some() {
                return None;
            }
        }
        pos = end_of_line(b, pos)?;
    }
    Some(entry)
}

/// A control character TOML does not allow unescaped in a string or comment.
fn is_control(c: u8) -> bool {
    (c < 0x20 && c != b'\t') || c == 0x7f
}

/// A single-line basic string with TOML 1.0 escapes only, or a literal string.
fn simple_string(b: &[u8], pos: usize) -> Option<Str> {
    let quote = *b.get(pos)?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    if b.get(pos + 1) == Some(&quote) && b.get(pos + 2) == Some(&quote) {
        // A multi-line string.
        return None;
    }
    let mut escaped = false;
    let mut p = pos + 1;
    loop {
        let c = *b.get(p)?;
        if c == quote {
            return Some(Str {
                span: pos..p + 1,
                escaped,
            });
        }
        if is_control(c) {
            return None;
        }
        if quote == b'"' && c == b'\\' {
            escaped = true;
            let n = match *b.get(p + 1)? {
                b'b' | b't' | b'n' | b'f' | b'r' | b'"' | b'\\' => 0,
                b'u' => 4,
                b'U' => 8,
                _ => return None,
            };
            let hex = b.get(p + 2..p + 2 + n)?;
            if n > 0 {
                let digits = std::str::from_utf8(hex).ok()?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                char::from_u32(u32::from_str_radix(digits, 16).ok()?)?;
            }
            p += 2 + n;
            continue;
        }
        p += 1;
    }
}

/// The end (one past the `}`) of the single-line inline table at `pos`, following strings
/// and nested brackets; `None` for a comment or line end inside it.
fn inline_table_end(b: &[u8], pos: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut p = pos;
    while p < b.len() {
        match b[p] {
            b'\n' | b'\r' | b'#' => return None,
            b'"' if b[p..].starts_with(b"\"\"\"") => return None,
            b'\'' if b[p..].starts_with(b"'''") => return None,
            b'"' => {
                p = basic_string(b, p)?;
                continue;
            }
            b'\'' => {
                p = literal_string(b, p)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return (b[p] == b'}').then_some(p + 1);
                }
            }
            c if is_control(c) => return None,
            _ => {}
        }
        p += 1;
    }
    None
}
