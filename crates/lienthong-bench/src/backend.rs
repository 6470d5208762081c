//! The backend every topology ends at: reads the request body (discarding it), then answers
//! `size` bytes (`?size=N`, default 1 KiB) streamed from one shared chunk, so neither side of a
//! 100 MiB exchange is ever held in its memory.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Default answer size: the 1 KiB response of the method in `performance.md`.
pub const DEFAULT_SIZE: u64 = 1024;
const CHUNK: usize = 64 * 1024;

/// `len` bytes of `x`, as frames of at most 64 KiB cut from one shared buffer.
#[derive(Debug)]
pub struct Repeat {
    chunk: Bytes,
    remaining: u64,
}

impl Repeat {
    pub fn new(len: u64) -> Self {
        Self { chunk: Bytes::from(vec![b'x'; CHUNK]), remaining: len }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The `size` query parameter, if any.
pub fn requested_size(query: Option<&str>) -> u64 {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("size=")?.parse().ok())
        .unwrap_or(DEFAULT_SIZE)
}

async fn handle(req: Request<Incoming>) -> Result<Response<Repeat>, hyper::Error> {
    let size = requested_size(req.uri().query());
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    let mut resp = Response::new(Repeat::new(size));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(resp)
}

/// Serves on `listen` until the process is killed; prints the bound address first.
pub fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        #[allow(clippy::print_stdout)]
        {
            println!("{}", listener.local_addr()?);
        }
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(handle);
                // Load generators close connections mid-request at the end of a run.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_comes_from_the_query() {
        assert_eq!(requested_size(None), DEFAULT_SIZE);
        assert_eq!(requested_size(Some("a=1&size=1048576")), 1 << 20);
        assert_eq!(requested_size(Some("size=x")), DEFAULT_SIZE);
    }

    #[tokio::test]
    async fn repeat_yields_exactly_len_bytes() {
        let body = Repeat::new(3 * CHUNK as u64 + 5);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 3 * CHUNK + 5);
        assert!(bytes.iter().all(|b| *b == b'x'));
    }
}
