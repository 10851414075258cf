//! Incremental `multipart/related` reader (RFC 2046 § 5.1, RFC 2387).
//!
//! [`Parser`] is push based: [`Parser::feed`] hands it a chunk of the body
//! and [`Parser::next_event`] pulls [`Event`]s until it needs more input.
//! Part data is emitted as [`Bytes`] slices of the fed chunks, so the body
//! bytes are never copied; only part headers and the few bytes of a
//! delimiter that straddles two chunks are.
//!
//! [`MultipartReader`] wraps a parser around any
//! `Stream<Item = Result<Bytes, E>>` (such as an axum body's data stream).
//!
//! Grammar handled:
//!
//! - a preamble before the first delimiter is skipped; the first delimiter
//!   may start at the very first byte (no leading CRLF needed);
//! - a delimiter is `CRLF--boundary`, followed by optional transport padding
//!   (spaces and tabs) and CRLF (a bare LF is tolerated), then the part
//!   headers, terminated by an empty line (`CRLF CRLF`; a part with no
//!   headers at all is just the empty line);
//! - the close delimiter is `CRLF--boundary--`; the epilogue after it is
//!   ignored;
//! - end of input before the close delimiter is [`MultipartError::Truncated`].

use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use memchr::memmem;

/// Default cap on the size of one part's header block.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// Longest boundary accepted (RFC 2046 allows 70; a little slack is kept).
pub const MAX_BOUNDARY_LEN: usize = 256;

/// Parsing errors of the multipart framing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("multipart boundary is empty or longer than {MAX_BOUNDARY_LEN} bytes")]
    InvalidBoundary,
    #[error("body ended before the multipart close delimiter")]
    Truncated,
    #[error("part headers exceed {0} bytes")]
    HeadersTooLarge(usize),
    #[error("unexpected byte 0x{0:02x} after a multipart boundary delimiter")]
    BadDelimiterLine(u8),
}

/// The (lower-cased name, value) header fields of one part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHeaders {
    fields: Vec<(String, String)>,
}

impl PartHeaders {
    /// Parses a header block (without the terminating empty line).
    /// Folded continuation lines are unfolded; lines without a colon are
    /// ignored.
    pub fn parse(block: &[u8]) -> Self {
        let text = String::from_utf8_lossy(block);
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in text.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if let Some((name, value)) = line.split_once(':') {
                fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        PartHeaders { fields }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Content-Type` header, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.get("content-type")
    }

    /// All fields in order of appearance.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }
}

/// What the parser found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new part begins; its headers.
    PartStart(PartHeaders),
    /// A piece of the current part's body (never empty).
    PartData(Bytes),
    /// The current part ended (its delimiter was seen).
    PartEnd,
    /// The close delimiter was seen; nothing follows.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Skipping the preamble.
    Preamble,
    /// Inside a part body.
    Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DelimLine {
    /// Right after `CRLF--boundary`.
    Start,
    /// Seen one `-` of the close delimiter.
    Dash,
    /// Inside transport padding.
    Padding,
    /// Seen the CR of the delimiter line's CRLF.
    Cr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Scan(Scan),
    /// Delimiter found at the end of a part: emit `PartEnd` next.
    PartEnding,
    DelimLine(DelimLine),
    Headers,
    /// Close delimiter seen: emit `End` next.
    Closing,
    Done,
}

const CRLFCRLF: &[u8] = b"\r\n\r\n";

/// Bytes of the header accumulator that are not part of the header block:
/// the leading CRLF of the delimiter line and the terminating CRLFCRLF.
const HEADER_OVERHEAD: usize = 6;

/// Push-based `multipart/related` parser; see the module docs.
#[derive(Debug)]
pub struct Parser {
    /// `CRLF--boundary`.
    delim: Vec<u8>,
    finder: memmem::Finder<'static>,
    state: State,
    /// Unprocessed input.
    buf: Bytes,
    /// While scanning: a proper prefix of `delim` seen at the end of the
    /// previous input, not yet known to be data or delimiter.
    carry: Bytes,
    /// Header block being accumulated (starts with the CRLF of the
    /// delimiter line, so that an empty header block is found too).
    headers: BytesMut,
    max_header_bytes: usize,
    parts: usize,
}

impl Parser {
    /// A parser for `boundary` (the value of the Content-Type parameter,
    /// unquoted) with the default header size limit.
    pub fn new(boundary: &str) -> Result<Self, MultipartError> {
        Self::with_max_header_bytes(boundary, DEFAULT_MAX_HEADER_BYTES)
    }

    /// A parser with a custom limit on each part's header block.
    pub fn with_max_header_bytes(
        boundary: &str,
        max_header_bytes: usize,
    ) -> Result<Self, MultipartError> {
        if boundary.is_empty() || boundary.len() > MAX_BOUNDARY_LEN {
            return Err(MultipartError::InvalidBoundary);
        }
        let mut delim = Vec::with_capacity(boundary.len() + 4);
        delim.extend_from_slice(b"\r\n--");
        delim.extend_from_slice(boundary.as_bytes());
        let finder = memmem::Finder::new(&delim).into_owned();
        Ok(Parser {
            delim,
            finder,
            state: State::Scan(Scan::Preamble),
            buf: Bytes::new(),
            // Pretend the body starts with CRLF so that a delimiter at the
            // very beginning is recognised.
            carry: Bytes::from_static(b"\r\n"),
            headers: BytesMut::new(),
            max_header_bytes,
            parts: 0,
        })
    }

    /// Number of parts started so far.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Whether the close delimiter has been reached (and `End` emitted).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Adds input. Cheapest when called after [`Parser::next_event`]
    /// returned `Ok(None)` (the chunk is then taken as is, not copied).
    /// Input after the close delimiter is ignored.
    pub fn feed(&mut self, chunk: Bytes) {
        if matches!(self.state, State::Done | State::Closing) || chunk.is_empty() {
            return;
        }
        if self.buf.is_empty() {
            self.buf = chunk;
        } else {
            let mut joined = BytesMut::with_capacity(self.buf.len() + chunk.len());
            joined.extend_from_slice(&self.buf);
            joined.extend_from_slice(&chunk);
            self.buf = joined.freeze();
        }
    }

    /// Declares the end of input: an error unless the close delimiter has
    /// been seen.
    pub fn finish(&self) -> Result<(), MultipartError> {
        match self.state {
            State::Done | State::Closing => Ok(()),
            _ => Err(MultipartError::Truncated),
        }
    }

    /// The next event, or `Ok(None)` when more input is needed (or after
    /// `End`).
    pub fn next_event(&mut self) -> Result<Option<Event>, MultipartError> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Closing => {
                    self.state = State::Done;
                    self.buf = Bytes::new();
                    return Ok(Some(Event::End));
                }
                State::PartEnding => {
                    self.state = State::DelimLine(DelimLine::Start);
                    return Ok(Some(Event::PartEnd));
                }
                State::Scan(scan) => match self.scan()? {
                    ScanStep::Data(data) => {
                        if scan == Scan::Body && !data.is_empty() {
                            return Ok(Some(Event::PartData(data)));
                        }
                    }
                    ScanStep::NeedMore => return Ok(None),
                },
                State::DelimLine(line) => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let b = self.buf[0];
                    self.buf.advance(1);
                    self.state = match (line, b) {
                        (DelimLine::Start, b'-') => State::DelimLine(DelimLine::Dash),
                        (DelimLine::Dash, b'-') => State::Closing,
                        (DelimLine::Start | DelimLine::Padding, b' ' | b'\t') => {
                            State::DelimLine(DelimLine::Padding)
                        }
                        (DelimLine::Start | DelimLine::Padding, b'\r') => {
                            State::DelimLine(DelimLine::Cr)
                        }
                        (DelimLine::Start | DelimLine::Padding | DelimLine::Cr, b'\n') => {
                            self.headers.clear();
                            self.headers.extend_from_slice(b"\r\n");
                            State::Headers
                        }
                        (_, other) => return Err(MultipartError::BadDelimiterLine(other)),
                    };
                }
                State::Headers => match self.scan_headers()? {
                    Some(headers) => {
                        self.parts += 1;
                        self.state = State::Scan(Scan::Body);
                        return Ok(Some(Event::PartStart(headers)));
                    }
                    None => return Ok(None),
                },
            }
        }
    }

    /// Called when a delimiter has been consumed in scan state.
    fn delimiter_found(&mut self) {
        self.state = match self.state {
            State::Scan(Scan::Body) => State::PartEnding,
            _ => State::DelimLine(DelimLine::Start),
        };
    }

    /// Scans for the delimiter; returns data preceding it (or data known
    /// not to be part of a delimiter).
    fn scan(&mut self) -> Result<ScanStep, MultipartError> {
        let dlen = self.delim.len();
        if !self.carry.is_empty() {
            if self.buf.is_empty() {
                return Ok(ScanStep::NeedMore);
            }
            // Does a delimiter start inside the carried bytes? Only the
            // first dlen-1 new bytes can complete it.
            let k = self.carry.len();
            let take = self.buf.len().min(dlen - 1);
            let mut window = BytesMut::with_capacity(k + take);
            window.extend_from_slice(&self.carry);
            window.extend_from_slice(&self.buf[..take]);
            if let Some(j) = self.finder.find(&window) {
                // j < k because window.len() < k + dlen.
                let data = self.carry.slice(..j);
                self.carry = Bytes::new();
                self.buf.advance(j + dlen - k);
                self.delimiter_found();
                return Ok(ScanStep::Data(data));
            }
            if self.buf.len() >= dlen - 1 {
                // No delimiter starts in the carry: it is plain data.
                let data = std::mem::take(&mut self.carry);
                return Ok(ScanStep::Data(data));
            }
            // All new input fits in the window; keep only the possible
            // delimiter prefix at its end.
            self.buf = Bytes::new();
            let mut window = window.freeze();
            let keep = suffix_prefix_len(&window, &self.delim);
            let data = window.split_to(window.len() - keep);
            self.carry = window;
            return Ok(ScanStep::Data(data));
        }
        if self.buf.is_empty() {
            return Ok(ScanStep::NeedMore);
        }
        if let Some(i) = self.finder.find(&self.buf) {
            let data = self.buf.split_to(i);
            self.buf.advance(dlen);
            self.delimiter_found();
            return Ok(ScanStep::Data(data));
        }
        let keep = suffix_prefix_len(&self.buf, &self.delim);
        let data = self.buf.split_to(self.buf.len() - keep);
        self.carry = std::mem::take(&mut self.buf);
        Ok(ScanStep::Data(data))
    }

    /// Accumulates the header block; `Some` once its empty line is seen.
    fn scan_headers(&mut self) -> Result<Option<PartHeaders>, MultipartError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        // A terminator straddling the previous input and the new one.
        let tail_start = self.headers.len().saturating_sub(3);
        let n = self.headers.len() - tail_start;
        let m = self.buf.len().min(3);
        let mut window = [0u8; 6];
        window[..n].copy_from_slice(&self.headers[tail_start..]);
        window[n..n + m].copy_from_slice(&self.buf[..m]);
        let end = match memmem::find(&window[..n + m], CRLFCRLF) {
            Some(q) => Some(q + 4 - n),
            None => {
                // Search no further than the size limit allows.
                let room =
                    (self.max_header_bytes + HEADER_OVERHEAD).saturating_sub(self.headers.len());
                let limit = self.buf.len().min(room);
                memmem::find(&self.buf[..limit], CRLFCRLF).map(|p| p + 4)
            }
        };
        match end {
            Some(end) => {
                if self.headers.len() + end > self.max_header_bytes + HEADER_OVERHEAD {
                    return Err(MultipartError::HeadersTooLarge(self.max_header_bytes));
                }
                self.headers.extend_from_slice(&self.buf[..end]);
                self.buf.advance(end);
                // Strip the leading CRLF and the terminating CRLFCRLF.
                let block_end = self.headers.len() - 4;
                let block = if block_end > 2 {
                    &self.headers[2..block_end]
                } else {
                    &[][..]
                };
                let headers = PartHeaders::parse(block);
                self.headers.clear();
                Ok(Some(headers))
            }
            None => {
                if self.headers.len() + self.buf.len() > self.max_header_bytes + HEADER_OVERHEAD {
                    return Err(MultipartError::HeadersTooLarge(self.max_header_bytes));
                }
                self.headers.extend_from_slice(&self.buf);
                self.buf = Bytes::new();
                Ok(None)
            }
        }
    }
}

enum ScanStep {
    Data(Bytes),
    NeedMore,
}

/// Length of the longest proper prefix of `delim` that is a suffix of
/// `data`.
fn suffix_prefix_len(data: &[u8], delim: &[u8]) -> usize {
    let max = data.len().min(delim.len() - 1);
    let tail = &data[data.len() - max..];
    // Candidates start at a CR (the first byte of the delimiter).
    for (i, _) in tail.iter().enumerate().filter(|(_, b)| **b == delim[0]) {
        let cand = &tail[i..];
        if delim.starts_with(cand) {
            return cand.len();
        }
    }
    0
}

/// Errors of [`MultipartReader`]: framing or the underlying stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    #[error(transparent)]
    Multipart(#[from] MultipartError),
    #[error("reading the request body failed: {0}")]
    Stream(E),
}

/// Pull-based reader of multipart events from a byte stream.
pub struct MultipartReader<S> {
    stream: S,
    parser: Parser,
    eof: bool,
}

impl<S, E> MultipartReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    /// Reads `stream` as a multipart body delimited by `boundary`.
    pub fn new(stream: S, boundary: &str) -> Result<Self, MultipartError> {
        Ok(Self::with_parser(stream, Parser::new(boundary)?))
    }

    /// Reads `stream` with a pre-configured parser.
    pub fn with_parser(stream: S, parser: Parser) -> Self {
        MultipartReader {
            stream,
            parser,
            eof: false,
        }
    }

    /// Number of parts started so far.
    pub fn parts(&self) -> usize {
        self.parser.parts()
    }

    /// The next event; `Ok(None)` after `End`.
    pub async fn next(&mut self) -> Result<Option<Event>, ReadError<E>> {
        loop {
            if let Some(ev) = self.parser.next_event()? {
                return Ok(Some(ev));
            }
            if self.parser.is_done() {
                return Ok(None);
            }
            if self.eof {
                self.parser.finish()?;
                return Ok(None);
            }
            match Pin::new(&mut self.stream).next().await {
                Some(Ok(chunk)) => self.parser.feed(chunk),
                Some(Err(e)) => return Err(ReadError::Stream(e)),
                None => self.eof = true,
            }
        }
    }

    /// Reads and discards the rest of the stream (the epilogue), at most
    /// `limit` bytes; returns whether the stream ended.
    pub async fn drain(&mut self, limit: usize) -> bool {
        let mut seen = 0usize;
        while !self.eof {
            match Pin::new(&mut self.stream).next().await {
                Some(Ok(chunk)) => {
                    seen += chunk.len();
                    if seen > limit {
                        return false;
                    }
                }
                Some(Err(_)) => return false,
                None => self.eof = true,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// Runs the parser over `body` fed in chunks of `size`, collecting
    /// events with adjacent data merged.
    fn run(body: &[u8], size: usize, boundary: &str) -> Result<Vec<Ev>, MultipartError> {
        run_with(Parser::new(boundary)?, body, size)
    }

    fn run_with(mut p: Parser, body: &[u8], size: usize) -> Result<Vec<Ev>, MultipartError> {
        let mut out = Vec::new();
        for chunk in body.chunks(size.max(1)) {
            p.feed(Bytes::copy_from_slice(chunk));
            while let Some(ev) = p.next_event()? {
                push(&mut out, ev);
            }
        }
        p.finish()?;
        while let Some(ev) = p.next_event()? {
            push(&mut out, ev);
        }
        Ok(out)
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Ev {
        Start(Vec<(String, String)>),
        Data(Vec<u8>),
        PartEnd,
        End,
    }

    fn push(out: &mut Vec<Ev>, ev: Event) {
        match ev {
            Event::PartStart(h) => out.push(Ev::Start(h.fields().to_vec())),
            Event::PartData(d) => {
                assert!(!d.is_empty(), "empty PartData emitted");
                if let Some(Ev::Data(prev)) = out.last_mut() {
                    prev.extend_from_slice(&d);
                } else {
                    out.push(Ev::Data(d.to_vec()));
                }
            }
            Event::PartEnd => out.push(Ev::PartEnd),
            Event::End => out.push(Ev::End),
        }
    }

    fn ct(v: &str) -> Ev {
        Ev::Start(vec![("content-type".into(), v.into())])
    }

    const JUNK_AFTER_DELIM: &[u8] = b"preamble text\r\n--XyZ\r\n\
Content-Type: application/dicom\r\n\
\r\n\
first\r\n--XyZbody\r\n-\r\n--Xy\r\n\
--XyZ  \t\r\n\
Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n\
\r\n\
\r\n\r\nsecond\r\n\
--XyZ--\r\nepilogue --XyZ garbage";

    #[test]
    fn every_chunk_size() {
        // A body that contains near-delimiters but no real ones inside parts.
        let body: &[u8] = b"preamble\r\n--XyZ\r\n\
Content-Type: application/dicom\r\n\
\r\n\
first\r\n--Xy\r\n-\r\n\r\r\n--X\r\n\
--XyZ  \t\r\n\
Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n\
\r\n\
\r\n\r\nsecond\r\r\n\
--XyZ--\r\nepilogue --XyZ garbage";
        let expected = vec![
            ct("application/dicom"),
            Ev::Data(b"first\r\n--Xy\r\n-\r\n\r\r\n--X".to_vec()),
            Ev::PartEnd,
            ct("application/dicom; transfer-syntax=1.2.840.10008.1.2.1"),
            Ev::Data(b"\r\n\r\nsecond\r".to_vec()),
            Ev::PartEnd,
            Ev::End,
        ];
        for size in 1..=body.len() {
            assert_eq!(
                run(body, size, "XyZ").unwrap(),
                expected,
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn every_three_way_split() {
        let body: &[u8] = b"pre\r\n--bnd\r\nContent-Type: a\r\n\r\nx\r\n-\r\r\n--bn\r\n--bnd \r\n\r\nyy\r\n--bnd--";
        let expected = vec![
            ct("a"),
            Ev::Data(b"x\r\n-\r\r\n--bn".to_vec()),
            Ev::PartEnd,
            Ev::Start(vec![]),
            Ev::Data(b"yy".to_vec()),
            Ev::PartEnd,
            Ev::End,
        ];
        for i in 0..=body.len() {
            for j in i..=body.len() {
                let mut p = Parser::new("bnd").unwrap();
                let mut out = Vec::new();
                for chunk in [&body[..i], &body[i..j], &body[j..]] {
                    p.feed(Bytes::copy_from_slice(chunk));
                    while let Some(ev) = p.next_event().unwrap() {
                        push(&mut out, ev);
                    }
                }
                p.finish().unwrap();
                assert_eq!(out, expected, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn delimiter_followed_by_junk_is_an_error() {
        for size in 1..=JUNK_AFTER_DELIM.len() {
            assert_eq!(
                run(JUNK_AFTER_DELIM, size, "XyZ"),
                Err(MultipartError::BadDelimiterLine(b'b')),
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn delimiter_at_start_without_preamble() {
        let body = b"--b\r\nContent-Type: a\r\n\r\nx\r\n--b--";
        for size in 1..=body.len() {
            assert_eq!(
                run(body, size, "b").unwrap(),
                vec![ct("a"), Ev::Data(b"x".to_vec()), Ev::PartEnd, Ev::End]
            );
        }
    }

    #[test]
    fn part_without_headers_and_empty_part() {
        let body = b"--b\r\n\r\nabc\r\n--b\r\n\r\n\r\n--b--\r\n";
        for size in 1..=body.len() {
            assert_eq!(
                run(body, size, "b").unwrap(),
                vec![
                    Ev::Start(vec![]),
                    Ev::Data(b"abc".to_vec()),
                    Ev::PartEnd,
                    Ev::Start(vec![]),
                    Ev::PartEnd,
                    Ev::End
                ]
            );
        }
    }

    #[test]
    fn folded_headers_and_case() {
        let body = b"--b\r\nCONTENT-TYPE: application/dicom;\r\n  transfer-syntax=1.2\r\nX-Other:v\r\n\r\nz\r\n--b--";
        let evs = run(body, 7, "b").unwrap();
        assert_eq!(
            evs[0],
            Ev::Start(vec![
                (
                    "content-type".into(),
                    "application/dicom; transfer-syntax=1.2".into()
                ),
                ("x-other".into(), "v".into())
            ])
        );
    }

    #[test]
    fn lf_only_delimiter_line_is_tolerated() {
        let body = b"--b\nContent-Type: a\r\n\r\nx\r\n--b--";
        assert_eq!(
            run(body, 3, "b").unwrap(),
            vec![ct("a"), Ev::Data(b"x".to_vec()), Ev::PartEnd, Ev::End]
        );
    }

    #[test]
    fn truncated_bodies() {
        let full = b"--b\r\nContent-Type: a\r\n\r\nxyz\r\n--b--";
        // Every strict prefix that stops before the close delimiter's
        // second dash is truncated.
        for len in 0..full.len() {
            for size in [1, 2, 5, 100] {
                assert_eq!(
                    run(&full[..len], size, "b"),
                    Err(MultipartError::Truncated),
                    "len {len} size {size}"
                );
            }
        }
        assert!(run(full, 4, "b").is_ok());
    }

    #[test]
    fn no_parts_at_all() {
        let mut p = Parser::new("b").unwrap();
        p.feed(Bytes::from_static(b"--b--\r\n"));
        assert_eq!(p.next_event().unwrap(), Some(Event::End));
        assert_eq!(p.parts(), 0);
        assert!(p.finish().is_ok());
        // Empty body.
        assert_eq!(run(b"", 1, "b"), Err(MultipartError::Truncated));
    }

    #[test]
    fn headers_too_large() {
        let mut body = b"--b\r\nX-Big: ".to_vec();
        body.extend(std::iter::repeat_n(b'a', 200));
        body.extend_from_slice(b"\r\n\r\ndata\r\n--b--");
        for size in [1, 3, 17, 1000] {
            let p = Parser::with_max_header_bytes("b", 100).unwrap();
            assert_eq!(
                run_with(p, &body, size),
                Err(MultipartError::HeadersTooLarge(100)),
                "size {size}"
            );
            // A generous limit parses fine.
            let p = Parser::with_max_header_bytes("b", 300).unwrap();
            assert!(run_with(p, &body, size).is_ok());
        }
        // Without any terminator at all.
        let mut body = b"--b\r\nX-Big: ".to_vec();
        body.extend(std::iter::repeat_n(b'a', 1000));
        let p = Parser::with_max_header_bytes("b", 100).unwrap();
        assert_eq!(
            run_with(p, &body, 64),
            Err(MultipartError::HeadersTooLarge(100))
        );
    }

    #[test]
    fn header_limit_is_exact() {
        // Header block "X: 1234567" is 10 bytes.
        let body = b"--b\r\nX: 1234567\r\n\r\nd\r\n--b--";
        for size in 1..=body.len() {
            let p = Parser::with_max_header_bytes("b", 10).unwrap();
            assert!(run_with(p, body, size).is_ok(), "size {size}");
            let p = Parser::with_max_header_bytes("b", 9).unwrap();
            assert_eq!(
                run_with(p, body, size),
                Err(MultipartError::HeadersTooLarge(9)),
                "size {size}"
            );
        }
    }

    #[test]
    fn data_is_not_copied_for_large_chunks() {
        let mut body = b"--b\r\nContent-Type: a\r\n\r\n".to_vec();
        let header_len = body.len();
        body.extend(std::iter::repeat_n(b'x', 10_000));
        body.extend_from_slice(b"\r\n--b--");
        let chunk = Bytes::from(body);
        let base = chunk.as_ptr() as usize;
        let mut p = Parser::new("b").unwrap();
        p.feed(chunk.clone());
        assert!(matches!(p.next_event(), Ok(Some(Event::PartStart(_)))));
        match p.next_event() {
            Ok(Some(Event::PartData(d))) => {
                assert_eq!(d.len(), 10_000);
                assert_eq!(d.as_ptr() as usize, base + header_len);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn long_boundary_split_everywhere() {
        let boundary = "----=_Part_0_123456789.1700000000000abcdefghijklmnopqrstuvwxyz0123";
        let mut body = Vec::new();
        for i in 0..3 {
            body.extend_from_slice(
                format!("\r\n--{boundary}\r\nContent-Type: t{i}\r\n\r\n").as_bytes(),
            );
            // Data that contains most of the delimiter.
            body.extend_from_slice(
                format!("d{i}\r\n--{}", &boundary[..boundary.len() - 1]).as_bytes(),
            );
        }
        body.extend_from_slice(format!("\r\n--{boundary}--").as_bytes());
        let mut expected = Vec::new();
        for i in 0..3 {
            expected.push(ct(&format!("t{i}")));
            expected.push(Ev::Data(
                format!("d{i}\r\n--{}", &boundary[..boundary.len() - 1]).into_bytes(),
            ));
            expected.push(Ev::PartEnd);
        }
        expected.push(Ev::End);
        for size in 1..=body.len() {
            assert_eq!(run(&body, size, boundary).unwrap(), expected, "size {size}");
        }
    }

    #[test]
    fn invalid_boundary() {
        assert_eq!(Parser::new("").err(), Some(MultipartError::InvalidBoundary));
        let long = "x".repeat(MAX_BOUNDARY_LEN + 1);
        assert_eq!(
            Parser::new(&long).err(),
            Some(MultipartError::InvalidBoundary)
        );
    }

    #[tokio::test]
    async fn reader_over_stream() {
        let body = b"pre\r\n--b\r\nContent-Type: a\r\n\r\n0123456789\r\n--b--\r\n";
        let chunks: Vec<Result<Bytes, Infallible>> = body
            .chunks(4)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut r = MultipartReader::new(futures_util::stream::iter(chunks), "b").unwrap();
        let mut evs = Vec::new();
        while let Some(ev) = r.next().await.unwrap() {
            push(&mut evs, ev);
        }
        assert_eq!(
            evs,
            vec![
                ct("a"),
                Ev::Data(b"0123456789".to_vec()),
                Ev::PartEnd,
                Ev::End
            ]
        );
        assert_eq!(r.parts(), 1);
        assert!(r.drain(1024).await);

        // Truncated stream.
        let chunks: Vec<Result<Bytes, Infallible>> =
            vec![Ok(Bytes::from_static(b"--b\r\n\r\nabc"))];
        let mut r = MultipartReader::new(futures_util::stream::iter(chunks), "b").unwrap();
        let mut err = None;
        loop {
            match r.next().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(matches!(
            err,
            Some(ReadError::Multipart(MultipartError::Truncated))
        ));
    }
}
