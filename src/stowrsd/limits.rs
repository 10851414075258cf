//! What one STOW-RS request may hold: parts, bytes per request, bytes per
//! part; the defaults, the options that change them, and the error that
//! names the limit a request ran into.
//!
//! The receiver's memory does not depend on these (parts are streamed to
//! disk, and a request's results grow with its parts): they bound how much
//! one request may write and how many results and reply items it can make.
//! The free-disk reserve, a property of the store rather than of a request,
//! is in [`super::disk`].
//!
//! Owns the numbers and their error; it reads nothing and counts nothing
//! itself (the request handler does).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

/// Default cap on the parts of one request. Our exporter sends at most 500
/// instances per request (`max-instances-per-request`), dcm4chee one;
/// 10 000 leaves room for any honest client, while the results and the
/// reply of a request stay around a megabyte however the parts are made
/// (without it, millions of empty parts in a few MB made a reply of
/// gigabytes in memory).
pub const DEFAULT_MAX_PARTS: usize = 10_000;

/// Default cap on the bytes of one part (one instance): 4 GiB, the largest
/// uncompressed Pixel Data an explicit-length element can carry. Larger
/// objects (whole-slide levels, long cine) need the option.
pub const DEFAULT_MAX_PART_BYTES: u64 = 4 << 30;

/// Default cap on the bytes of one request body: 16 GiB, four of the
/// largest parts. A batch of our exporter stays below it unless
/// `max-instances-per-request` is raised for large objects without
/// `max-bytes-per-request`.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 << 30;

/// The bounds of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Parts per request (`--max-parts`).
    pub max_parts: usize,
    /// Bytes per request body, framing included (`--max-request-bytes`).
    pub max_request_bytes: u64,
    /// Bytes per part (`--max-part-bytes`).
    pub max_part_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_parts: DEFAULT_MAX_PARTS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_part_bytes: DEFAULT_MAX_PART_BYTES,
        }
    }
}

/// Which bound a request crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Parts,
    RequestBytes,
    PartBytes,
}

impl Limit {
    /// The option of `stowrsd` and of `serve` that sets it.
    pub fn options(self) -> &'static str {
        match self {
            Limit::Parts => "stowrsd --max-parts, serve --stowrsd-max-parts",
            Limit::RequestBytes => "stowrsd --max-request-bytes, serve --stowrsd-max-request-bytes",
            Limit::PartBytes => "stowrsd --max-part-bytes, serve --stowrsd-max-part-bytes",
        }
    }
}

/// A request over one of the [`Limits`]: answered 413 (or, when some
/// instances were stored, with the STOW-RS reply for them), and the rest of
/// the body is not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("the request has more than {max} parts, the limit ({})", Limit::Parts.options())]
    Parts { max: usize },
    #[error(
        "the request body declares {declared} bytes (Content-Length), more than the limit of {max} bytes ({})",
        Limit::RequestBytes.options()
    )]
    DeclaredRequestBytes { declared: u64, max: u64 },
    #[error(
        "the request body is larger than {max} bytes, the limit ({})",
        Limit::RequestBytes.options()
    )]
    RequestBytes { max: u64 },
    #[error(
        "part {part} is larger than {max} bytes, the limit ({})",
        Limit::PartBytes.options()
    )]
    PartBytes { part: usize, max: u64 },
}

impl LimitExceeded {
    pub fn limit(&self) -> Limit {
        match self {
            LimitExceeded::Parts { .. } => Limit::Parts,
            LimitExceeded::DeclaredRequestBytes { .. } | LimitExceeded::RequestBytes { .. } => {
                Limit::RequestBytes
            }
            LimitExceeded::PartBytes { .. } => Limit::PartBytes,
        }
    }
}

/// Errors of a body read through [`Bounded`].
#[derive(Debug, thiserror::Error)]
pub enum BodyError<E> {
    #[error("reading the request body failed: {0}")]
    Read(E),
    #[error(transparent)]
    TooLarge(LimitExceeded),
}

/// A body stream that ends in [`BodyError::TooLarge`] as soon as more than
/// `max` bytes came, so the reader stops there instead of draining the
/// rest.
pub struct Bounded<S> {
    inner: S,
    max: u64,
    seen: u64,
    failed: bool,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, max: u64) -> Self {
        Bounded {
            inner,
            max,
            seen: 0,
            failed: false,
        }
    }
}

impl<S, E> Stream for Bounded<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, BodyError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen = self.seen.saturating_add(chunk.len() as u64);
                if self.seen > self.max {
                    self.failed = true;
                    let max = self.max;
                    return Poll::Ready(Some(Err(BodyError::TooLarge(
                        LimitExceeded::RequestBytes { max },
                    ))));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Read(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::convert::Infallible;

    #[tokio::test]
    async fn bounded_stream_stops_after_the_limit() {
        let chunks: Vec<Result<Bytes, Infallible>> = (0..10)
            .map(|_| Ok(Bytes::from_static(b"0123456789")))
            .collect();
        let mut s = Bounded::new(futures_util::stream::iter(chunks.clone()), 30);
        let mut got = 0;
        while let Some(item) = s.next().await {
            match item {
                Ok(c) => got += c.len(),
                Err(e) => {
                    assert!(matches!(
                        e,
                        BodyError::TooLarge(LimitExceeded::RequestBytes { max: 30 })
                    ));
                    assert!(e.to_string().contains("--max-request-bytes"), "{e}");
                    break;
                }
            }
        }
        assert_eq!(got, 30);
        assert!(s.next().await.is_none());
        // Exactly at the limit is fine.
        let mut s = Bounded::new(futures_util::stream::iter(chunks), 100);
        let mut n = 0;
        while let Some(item) = s.next().await {
            n += item.unwrap().len();
        }
        assert_eq!(n, 100);
    }
}
