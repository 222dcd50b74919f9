//! Turning a webhook's answer (or the lack of one) into `SendOk` / `SendError`: status
//! classes, `Retry-After`, the response excerpt, and transport failures.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use estafeta_core::{SendError, SendErrorKind, SendOk};
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use super::ssrf::SsrfError;

/// Most bytes of an answer kept as its excerpt.
pub const EXCERPT_LIMIT: usize = 512;

/// Most bytes read from an answer so that its connection can be reused; past this the
/// connection is dropped instead.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Reads the answer's excerpt and classifies it (webhooks and chat incoming webhooks).
pub(crate) async fn classify_response(
    mut resp: reqwest::Response,
    host: &str,
) -> Result<SendOk, SendError> {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let mut excerpt = Vec::new();
    let mut read = 0usize;
    // A body that fails or stalls half-way does not change the status the receiver gave.
    while let Ok(Some(chunk)) = resp.chunk().await {
        read += chunk.len();
        let room = EXCERPT_LIMIT.saturating_sub(excerpt.len());
        excerpt.extend_from_slice(&chunk[..room.min(chunk.len())]);
        if read >= DRAIN_LIMIT {
            break;
        }
    }
    classify_status(status, retry_after, excerpt_text(&excerpt), host)
}

/// 2xx delivered; 408, 425, 429 and 5xx retryable (429 and 503 with their `Retry-After`);
/// 3xx final (redirects are not followed); other statuses final.
pub(crate) fn classify_status(
    status: StatusCode,
    retry_after: Option<Duration>,
    excerpt: Option<String>,
    host: &str,
) -> Result<SendOk, SendError> {
    let code = status.as_u16();
    let err = match code {
        200..=299 => {
            return Ok(SendOk {
                status_code: Some(code),
                response_excerpt: excerpt,
            });
        }
        300..=399 => SendError::final_error(format!(
            "HTTP {status} from {host}: redirects are not followed; configure the final URL"
        )),
        408 | 425 | 429 | 500..=599 => {
            let mut err = SendError::retryable(format!("HTTP {status} from {host}"));
            if matches!(code, 429 | 503) {
                err.kind = SendErrorKind::Retryable { after: retry_after };
            }
            err
        }
        _ => SendError::final_error(format!("HTTP {status} from {host}")),
    };
    Err(err.with_status(code).with_excerpt(excerpt))
}

/// A failure without an answer: SSRF refusals are final; timeouts, refused or reset
/// connections and other I/O failures are retryable. The URL is stripped from the cause.
pub(crate) fn classify_transport(err: reqwest::Error, host: &str, timeout: Duration) -> SendError {
    if let Some(ssrf) = find_ssrf(&err) {
        return refused(ssrf.clone());
    }
    let err = err.without_url();
    let cause = root_cause(&err);
    let err_out = if err.is_timeout() {
        SendError::retryable(format!("no answer from {host} within {timeout:?}"))
    } else if err.is_connect() {
        SendError::retryable(format!("cannot connect to {host}: {cause}"))
    } else if err.is_builder() {
        SendError::final_error(format!("the request to {host} cannot be built: {cause}"))
    } else {
        SendError::retryable(format!("the request to {host} failed: {cause}"))
    };
    err_out.with_source(err)
}

/// The final error for an address the SSRF guard refused.
pub(crate) fn refused(ssrf: SsrfError) -> SendError {
    SendError::final_error(ssrf.to_string()).with_source(ssrf)
}

fn find_ssrf<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a SsrfError> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(ssrf) = e.downcast_ref::<SsrfError>() {
            return Some(ssrf);
        }
        current = e.source();
    }
    None
}

fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// `Retry-After` as delta-seconds or an HTTP-date (a date in the past means now).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    let now: DateTime<Utc> = now.into();
    Some((date - now).to_std().unwrap_or(Duration::ZERO))
}

/// The excerpt as text: lossy UTF-8, without a character cut in half at the end.
pub(crate) fn excerpt_text(bytes: &[u8]) -> Option<String> {
    let bytes = match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() => &bytes[..e.valid_up_to()],
        _ => bytes,
    };
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kind(code: u16, retry_after: Option<Duration>) -> Result<(), SendErrorKind> {
        classify_status(StatusCode::from_u16(code).unwrap(), retry_after, None, "h")
            .map(|_| ())
            .map_err(|e| e.kind)
    }

    #[test]
    fn classifies_statuses() {
        let retry = Err(SendErrorKind::Retryable { after: None });
        let five = Some(Duration::from_secs(5));
        assert_eq!(kind(200, None), Ok(()));
        assert_eq!(kind(204, None), Ok(()));
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(kind(code, None), retry, "{code}");
        }
        assert_eq!(
            kind(429, five),
            Err(SendErrorKind::Retryable { after: five })
        );
        assert_eq!(
            kind(503, five),
            Err(SendErrorKind::Retryable { after: five })
        );
        assert_eq!(kind(500, five), retry);
        for code in [301, 302, 307, 308, 400, 401, 403, 404, 410, 413, 422] {
            assert_eq!(kind(code, None), Err(SendErrorKind::Final), "{code}");
        }
    }

    #[test]
    fn error_carries_status_and_excerpt() {
        let err = classify_status(
            StatusCode::BAD_GATEWAY,
            None,
            Some("oops".into()),
            "example.org",
        )
        .unwrap_err();
        assert_eq!(err.status_code, Some(502));
        assert_eq!(err.response_excerpt.as_deref(), Some("oops"));
        assert_eq!(err.message, "HTTP 502 Bad Gateway from example.org");
    }

    #[test]
    fn parses_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21T07:28:00Z
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn excerpt_does_not_cut_a_character() {
        assert_eq!(excerpt_text(b""), None);
        assert_eq!(excerpt_text(b"ok").as_deref(), Some("ok"));
        let euro = "€".as_bytes();
        assert_eq!(
            excerpt_text(&[b'a', euro[0], euro[1]]).as_deref(),
            Some("a")
        );
        assert_eq!(excerpt_text(&[0xff, b'a']).as_deref(), Some("\u{fffd}a"));
    }
}
