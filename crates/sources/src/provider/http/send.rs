//! Sending one of the HTTP provider's requests: the per-provider rate limit, retries with
//! backoff on timeouts, connection errors and 5xx, `Retry-After` on 429, and one fresh OAuth 2
//! token after a 401; and the SSRF guard (private, loopback and link-local addresses are
//! refused unless `allow_private_networks` is set).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use estafeta_config::RateLimit;
use estafeta_config::provider_http::AuthSettings;
use estafeta_destinations::webhook::ssrf::{SsrfError, refused_literal};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Method, StatusCode, Url};
use tokio_util::sync::CancellationToken;

use super::auth::Auth;
use crate::provider::ProviderError;

/// Longest wait between two tries (also caps `Retry-After`).
const MAX_WAIT: Duration = Duration::from_secs(60);
/// First backoff.
const BASE_WAIT: Duration = Duration::from_millis(200);

/// The HTTP side of a provider: client, auth, limiter and retry budget.
pub(crate) struct Sender {
    pub(crate) client: reqwest::Client,
    pub(crate) auth: Auth,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    attempts: u32,
    allow_private_networks: bool,
}

/// Refuses a URL whose host is a private IP literal (names are checked after resolution by
/// the client's resolver), unless private networks are allowed.
pub(crate) fn guard(url: &Url, allow_private_networks: bool) -> Result<(), ProviderError> {
    if allow_private_networks {
        return Ok(());
    }
    match url.host().and_then(|h| refused_literal(&h)) {
        Some(refused) => Err(ProviderError::Refused(refused)),
        None => Ok(()),
    }
}

/// The SSRF guard's refusal among an error's causes (a name that resolved only to private
/// addresses).
fn refusal(err: &reqwest::Error) -> Option<SsrfError> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(ssrf) = e.downcast_ref::<SsrfError>() {
            return Some(ssrf.clone());
        }
        next = e.source();
    }
    None
}

/// A transport error: the guard's refusal when that is what it is, else a request error.
pub(crate) fn transport(host: String, err: reqwest::Error) -> ProviderError {
    match refusal(&err) {
        Some(refused) => ProviderError::Refused(refused),
        None => ProviderError::request(host, err),
    }
}

/// The limiter for `count` requests per `per`, bursting up to `count`.
fn limiter(rate: &RateLimit) -> Option<DefaultDirectRateLimiter> {
    let count = NonZeroU32::new(rate.count)?;
    let period = rate.per.checked_div(rate.count)?;
    Quota::with_period(period).map(|q| RateLimiter::direct(q.allow_burst(count)))
}

/// Seconds of a `Retry-After` header (the HTTP-date form falls back to the backoff).
fn retry_after(res: &reqwest::Response) -> Option<Duration> {
    let v = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn backoff(attempt: u32) -> Duration {
    BASE_WAIT
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_WAIT)
}

impl Sender {
    pub(crate) fn new(
        client: reqwest::Client,
        auth: Auth,
        rate: Option<&RateLimit>,
        attempts: u32,
        allow_private_networks: bool,
    ) -> Self {
        Self {
            client,
            auth,
            limiter: rate.and_then(limiter).map(Arc::new),
            attempts: attempts.max(1),
            allow_private_networks,
        }
    }

    /// Sends `method url` with `headers` and the run's `auth`, retrying as the module says;
    /// answers a 2xx response.
    pub(crate) async fn send(
        &self,
        cancel: &CancellationToken,
        auth: &AuthSettings,
        method: &Method,
        url: &Url,
        headers: &[(String, String)],
    ) -> Result<reqwest::Response, ProviderError> {
        guard(url, self.allow_private_networks)?;
        let host = super::host_of(url.as_str());
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(l) = &self.limiter {
                tokio::select! {
                    () = l.until_ready() => {}
                    () = cancel.cancelled() => return Err(ProviderError::Cancelled),
                }
            }
            let mut req = self.client.request(method.clone(), url.clone());
            for (name, value) in headers {
                req = req.header(name, value);
            }
            let req = self.auth.apply(&self.client, auth, req).await?;
            let (wait, error) = match req.send().await {
                Ok(res) if res.status().is_success() => return Ok(res),
                Ok(res) if res.status() == StatusCode::UNAUTHORIZED && !refreshed => {
                    // A token revoked or expired early: one more try with a fresh one.
                    refreshed = true;
                    if self.auth.invalidate(auth).await {
                        attempt -= 1;
                        continue;
                    }
                    return Err(ProviderError::Status { host, status: 401 });
                }
                Ok(res) => {
                    let status = res.status();
                    let err = ProviderError::Status {
                        host: host.clone(),
                        status: status.as_u16(),
                    };
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let wait = retry_after(&res).unwrap_or_else(|| backoff(attempt));
                        (wait.min(MAX_WAIT), err)
                    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
                        (backoff(attempt), err)
                    } else {
                        return Err(err);
                    }
                }
                Err(source) => {
                    if let Some(refused) = refusal(&source) {
                        return Err(ProviderError::Refused(refused));
                    }
                    if !(source.is_timeout() || source.is_connect() || source.is_request()) {
                        return Err(ProviderError::request(host, source));
                    }
                    (
                        backoff(attempt),
                        ProviderError::request(host.clone(), source),
                    )
                }
            };
            if attempt >= self.attempts {
                return Err(error);
            }
            tracing::debug!(host = %host, attempt, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), error = %error, "provider request retried");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return Err(ProviderError::Cancelled),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(2), Duration::from_millis(800));
        assert_eq!(backoff(30), MAX_WAIT);
    }

    #[test]
    fn a_rate_makes_a_limiter() {
        let r = RateLimit {
            count: 10,
            per: Duration::from_secs(1),
        };
        assert!(limiter(&r).is_some());
    }
}
