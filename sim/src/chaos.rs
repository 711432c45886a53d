//! Random faults at a rate ([`crate::Chaos`]): every kind of failure a vendor API or the path to
//! it shows, drawn at random for a fraction of the data requests, for tests that must prove an
//! agent comes through them with exactly the ground truth.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, ReadBuf};

/// The kinds of fault, by the name statistics count them under.
pub(crate) const KINDS: [&str; 12] = [
    "429_retry_after",
    "429",
    "500",
    "502",
    "503",
    "html_maintenance",
    "slow",
    "malformed_json",
    "cut_short",
    "reset",
    "expired_token",
    "empty_200",
];

/// What to serve instead of the real answer.
pub(crate) enum Served {
    /// This response.
    Response(Response),
    /// The real answer, after Domo's tokens were invalidated (it will be a 401).
    ExpiredToken,
}

/// The response for fault `kind` (one of [`KINDS`], not `expired_token`); `slow` is how long a
/// slow answer waits before its first byte.
pub(crate) fn serve(kind: &str, slow: Duration) -> Served {
    let json = |status: StatusCode, body: &str| -> Response {
        (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body.to_string(),
        )
            .into_response()
    };
    let html = |status: StatusCode, body: &str| -> Response {
        (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("text/html"))],
            body.to_string(),
        )
            .into_response()
    };
    let r = match kind {
        "429_retry_after" => {
            let mut r = json(StatusCode::TOO_MANY_REQUESTS, r#"{"error":"rate limited"}"#);
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        "429" => json(StatusCode::TOO_MANY_REQUESTS, r#"{"error":"rate limited"}"#),
        "500" => json(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"internal"}"#),
        "502" => html(
            StatusCode::BAD_GATEWAY,
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        ),
        "503" => json(StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"unavailable"}"#),
        // A load balancer's maintenance page, served with a 200 as some are.
        "html_maintenance" => html(
            StatusCode::OK,
            "<!DOCTYPE html><html><head><title>Maintenance</title></head>\
             <body><p>We'll be back soon.</p></body></html>",
        ),
        "slow" => body(
            StatusCode::OK,
            Partial::slow(slow, br#"{"error":"too late"}"#.to_vec()),
            None,
        ),
        "malformed_json" => json(StatusCode::OK, r#"{"events":[{"id":"x","timestamp":"#),
        // Headers promise 4096 bytes; 100 come, then the connection breaks.
        "cut_short" => body(
            StatusCode::OK,
            Partial::cut(br#"{"events":[{"id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"#.to_vec()),
            Some(4096),
        ),
        // Headers, then the connection breaks before any byte of the body.
        "reset" => body(StatusCode::OK, Partial::cut(Vec::new()), Some(2048)),
        "expired_token" => return Served::ExpiredToken,
        _ => json(StatusCode::OK, ""),
    };
    Served::Response(r)
}

fn body(status: StatusCode, reader: Partial, len: Option<u64>) -> Response {
    let mut r = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(reader)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(n) = len {
        r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    r
}

/// A body that waits, gives some bytes, then ends or fails.
struct Partial {
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    data: Vec<u8>,
    pos: usize,
    /// Fail (a broken connection) once `data` is given, instead of ending.
    fail: bool,
}

impl Partial {
    fn slow(wait: Duration, data: Vec<u8>) -> Partial {
        Partial {
            wait: Some(Box::pin(tokio::time::sleep(wait))),
            data,
            pos: 0,
            fail: false,
        }
    }

    fn cut(data: Vec<u8>) -> Partial {
        Partial {
            wait: None,
            data,
            pos: 0,
            fail: true,
        }
    }
}

impl AsyncRead for Partial {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(w) = self.wait.as_mut() {
            if w.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        if self.pos < self.data.len() {
            let n = buf.remaining().min(self.data.len() - self.pos);
            let pos = self.pos;
            buf.put_slice(&self.data[pos..pos + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        if self.fail {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "injected: connection reset",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

use std::future::Future as _;
