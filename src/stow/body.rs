//! Reading a peer's reply body within a byte limit: one function for the
//! STOW-RS replies of a destination and the replies of an OAuth2 token
//! endpoint.
//!
//! Both replies are small; a peer that sends more is broken or hostile.
//! [`read_limited`] refuses such a body as a whole ([`ReadError::TooLarge`])
//! instead of keeping a truncated prefix that might still parse as
//! something it is not, and never holds more than the limit in memory,
//! whatever the peer's `Content-Length` claims.

/// Why a reply body was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The body is (or announced itself as) larger than the limit. What was
    /// read so far is dropped, and the connection with it.
    #[error("the reply exceeds the limit of {limit} bytes{}", announced_len(*.announced))]
    TooLarge {
        limit: usize,
        /// The `Content-Length` the peer announced, when that was over the limit.
        announced: Option<u64>,
    },
    /// The connection failed while the body was read.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

fn announced_len(announced: Option<u64>) -> String {
    announced.map_or_else(String::new, |n| format!(" (Content-Length: {n})"))
}

/// The whole body of `resp` if it has at most `limit` bytes.
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    // An announced length over the limit is refused before any byte is
    // read; an announced length under it is trusted only as a capacity
    // hint, never beyond the limit.
    let announced = resp.content_length();
    if let Some(n) = announced
        && n > limit as u64
    {
        return Err(ReadError::TooLarge {
            limit,
            announced: Some(n),
        });
    }
    let mut body = Vec::with_capacity(announced.map_or(0, |n| n as usize));
    while let Some(chunk) = resp.chunk().await? {
        if chunk.len() > limit - body.len() {
            return Err(ReadError::TooLarge {
                limit,
                announced: None,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering every request with `body`, chunked unless
    /// `length` (which may lie) is given.
    async fn serve(body: Vec<u8>, length: Option<u64>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let head = match length {
                Some(n) => format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n"),
                None => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
            };
            let _ = s.write_all(head.as_bytes()).await;
            if length.is_some() {
                let _ = s.write_all(&body).await;
            } else {
                for c in body.chunks(1000) {
                    let _ = s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await;
                    let _ = s.write_all(c).await;
                    let _ = s.write_all(b"\r\n").await;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            }
        });
        format!("http://{addr}/")
    }

    async fn get(body: Vec<u8>, length: Option<u64>, limit: usize) -> Result<Vec<u8>, ReadError> {
        let url = serve(body, length).await;
        let resp = reqwest::get(url).await.unwrap();
        read_limited(resp, limit).await
    }

    #[tokio::test]
    async fn within_the_limit_is_read_whole() {
        let body = vec![b'x'; 5000];
        assert_eq!(get(body.clone(), None, 5000).await.unwrap(), body);
        assert_eq!(get(body.clone(), Some(5000), 5000).await.unwrap(), body);
    }

    #[tokio::test]
    async fn over_the_limit_is_an_error_not_a_prefix() {
        let e = get(vec![b'x'; 5001], None, 5000).await.unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::TooLarge {
                    limit: 5000,
                    announced: None
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "the reply exceeds the limit of 5000 bytes");
        // An announced length over the limit is refused unread.
        let e = get(vec![b'x'; 10], Some(1 << 40), 5000).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the reply exceeds the limit of 5000 bytes (Content-Length: 1099511627776)"
        );
    }
}
