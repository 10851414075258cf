//! The `multipart/related; type="application/dicom"` request body.
//!
//! Built by hand (reqwest's multipart is form-data only): each part is a
//! delimiter line, a `Content-Type` header and the Part-10 file bytes,
//! streamed from storage so memory does not grow with object size. The
//! total length is known up front, so the body can go with `Content-Length`
//! or, when the web app says `chunked=true`, chunked.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::{self, StreamExt};
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::fs::File;
use tokio_util::io::ReaderStream;

/// Read size when streaming files: large enough that a typical object goes
/// in one or two reads (each read is a hop to the blocking pool),
/// small enough that `concurrency` requests in flight stay in a few MB.
const READ_CHUNK: usize = 1024 * 1024;

/// The part media type. No `transfer-syntax` parameter by default: some
/// servers (Orthanc up to DICOMweb 1.18) silently drop a part whose
/// Content-Type carries one. The `transfer-syntax-parameter` property adds it.
pub const PART_CONTENT_TYPE: &str = "application/dicom";

/// A random boundary of 40 alphanumerics: the chance that it occurs in
/// DICOM data is negligible.
pub fn new_boundary() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// The request's `Content-Type` header value.
pub fn content_type(boundary: &str) -> String {
    format!("multipart/related; type=\"{PART_CONTENT_TYPE}\"; boundary={boundary}")
}

fn part_head(boundary: &str, first: bool, transfer_syntax: Option<&str>) -> Bytes {
    let lead = if first { "" } else { "\r\n" };
    let param = transfer_syntax.map_or(String::new(), |ts| format!("; transfer-syntax={ts}"));
    Bytes::from(format!(
        "{lead}--{boundary}\r\nContent-Type: {PART_CONTENT_TYPE}{param}\r\n\r\n"
    ))
}

fn close(boundary: &str) -> Bytes {
    Bytes::from(format!("\r\n--{boundary}--\r\n"))
}

/// The exact body length of `parts`.
pub fn body_len(boundary: &str, parts: &[PartFile]) -> u64 {
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            part_head(boundary, i == 0, p.transfer_syntax.as_deref()).len() as u64 + p.len
        })
        .sum::<u64>()
        + close(boundary).len() as u64
}

/// One part's content: the object's bytes, read already, or an opened
/// file to stream, with the length it must have.
pub struct PartFile {
    pub content: PartContent,
    pub len: u64,
    /// For error messages.
    pub name: String,
    /// The `transfer-syntax` parameter of the part's Content-Type, if any.
    pub transfer_syntax: Option<String>,
}

/// Where a part's bytes come from.
pub enum PartContent {
    /// A small object, read whole in one blocking call.
    Bytes(Bytes),
    /// A large object, streamed in `READ_CHUNK` reads.
    File(File),
}

/// The body as a stream of byte chunks. A file that turns out shorter or
/// longer than `len` (changed on disk while sending) ends the stream with
/// an error, so a truncated object is never sent as if it were whole.
pub fn body_stream(
    boundary: String,
    parts: Vec<PartFile>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let close = close(&boundary);
    let part_streams = parts.into_iter().enumerate().map(move |(i, p)| {
        let head = stream::once(futures_util::future::ready(Ok(part_head(
            &boundary,
            i == 0,
            p.transfer_syntax.as_deref(),
        ))));
        let content = match p.content {
            PartContent::Bytes(b) => {
                let r = if b.len() as u64 == p.len {
                    Ok(b)
                } else {
                    Err(io::Error::other(format!(
                        "{} changed while being read ({} of {} bytes)",
                        p.name,
                        b.len(),
                        p.len
                    )))
                };
                stream::once(futures_util::future::ready(r)).left_stream()
            }
            PartContent::File(file) => Exact {
                inner: ReaderStream::with_capacity(file, READ_CHUNK),
                expected: p.len,
                seen: 0,
                name: p.name,
                done: false,
            }
            .right_stream(),
        };
        head.chain(content)
    });
    stream::iter(part_streams)
        .flatten()
        .chain(stream::once(futures_util::future::ready(Ok(close))))
}

/// Checks that a file stream yields exactly `expected` bytes.
struct Exact {
    inner: ReaderStream<File>,
    expected: u64,
    seen: u64,
    name: String,
    done: bool,
}

impl Stream for Exact {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.seen += b.len() as u64;
                if self.seen > self.expected {
                    self.done = true;
                    let msg = format!(
                        "{} grew while being sent (expected {} bytes)",
                        self.name, self.expected
                    );
                    return Poll::Ready(Some(Err(io::Error::other(msg))));
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(None) => {
                self.done = true;
                if self.seen != self.expected {
                    let msg = format!(
                        "{} shrank while being sent ({} of {} bytes)",
                        self.name, self.seen, self.expected
                    );
                    return Poll::Ready(Some(Err(io::Error::other(msg))));
                }
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of `contents` and the length `body_len` predicted for it.
    async fn collect(
        boundary: &str,
        contents: &[&[u8]],
        transfer_syntax: Option<&str>,
    ) -> (Vec<u8>, u64, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut parts = Vec::new();
        for (i, c) in contents.iter().enumerate() {
            let p = dir.path().join(format!("{i}.dcm"));
            std::fs::write(&p, c).unwrap();
            parts.push(PartFile {
                content: if i % 2 == 0 {
                    PartContent::File(File::open(&p).await.unwrap())
                } else {
                    PartContent::Bytes(Bytes::copy_from_slice(c))
                },
                len: c.len() as u64,
                name: p.display().to_string(),
                transfer_syntax: transfer_syntax.map(str::to_string),
            });
        }
        let predicted = body_len(boundary, &parts);
        let mut s = Box::pin(body_stream(boundary.to_string(), parts));
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b.unwrap());
        }
        (out, predicted, dir)
    }

    #[tokio::test]
    async fn body_is_exact_multipart_related() {
        let (body, predicted, _d) = collect("B0", &[b"DICM-1", b"two\r\n--B"], None).await;
        let expected = b"--B0\r\nContent-Type: application/dicom\r\n\r\nDICM-1\r\n--B0\r\nContent-Type: application/dicom\r\n\r\ntwo\r\n--B\r\n--B0--\r\n";
        assert_eq!(body, expected.to_vec());
        assert_eq!(predicted, body.len() as u64);
    }

    #[tokio::test]
    async fn transfer_syntax_parameter_when_asked_for() {
        let (body, predicted, _d) = collect("B0", &[b"x"], Some("1.2.840.10008.1.2.1")).await;
        let expected = b"--B0\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\nx\r\n--B0--\r\n";
        assert_eq!(body, expected.to_vec());
        assert_eq!(predicted, body.len() as u64);
    }

    #[tokio::test]
    async fn length_is_predicted_for_large_parts() {
        let big = vec![7u8; 3 * READ_CHUNK + 17];
        let b = new_boundary();
        let (body, predicted, _d) = collect(&b, &[&big, b"x"], None).await;
        assert_eq!(predicted, body.len() as u64);
        assert_eq!(b.len(), 40);
        assert!(
            content_type(&b)
                .starts_with("multipart/related; type=\"application/dicom\"; boundary=")
        );
    }

    #[tokio::test]
    async fn a_file_that_changed_size_fails_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.dcm");
        std::fs::write(&p, b"short").unwrap();
        let parts = vec![PartFile {
            content: PartContent::File(File::open(&p).await.unwrap()),
            len: 10,
            name: "a.dcm".into(),
            transfer_syntax: None,
        }];
        let items: Vec<_> = body_stream("B".into(), parts).collect().await;
        let err = items
            .iter()
            .find_map(|i| i.as_ref().err())
            .expect("an error");
        assert!(err.to_string().contains("shrank"), "{err}");
    }
}
