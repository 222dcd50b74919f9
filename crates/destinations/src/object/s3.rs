//! The S3 side of object destinations: one client per destination (object_store's S3
//! implementation over reqwest, rustls on the ring provider, SigV4 signing with ring),
//! objects written with single PUTs (S3 stores a PUT whole or not at all), and the
//! classification of failures for the retry machinery.
//!
//! * 401/403 (wrong keys, a policy that refuses) and 404 (no such bucket) are final, with a
//!   message naming the bucket and the endpoint and S3's error code;
//! * 5xx, 429, 408, 409, timeouts and connection failures are retryable;
//! * other 4xx answers and redirects (a wrong region) are final.
//!
//! object_store retries a failed request at most twice within the destination's timeout;
//! longer outages are the engine's retry schedule's job. Messages never carry the keys.

use std::time::Duration;

use bytes::Bytes;
use estafeta_config::object_destination::S3Settings;
use estafeta_core::SendError;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectStore, PutOptions, PutPayload,
    RetryConfig,
};

/// One object that could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum S3Error {
    /// The key is not a valid object path.
    #[error("`{key}` is not a valid object key")]
    Key {
        /// The key.
        key: String,
        /// The parser's reason.
        #[source]
        source: object_store::path::Error,
    },
    /// The PUT failed.
    #[error("cannot write `{key}` to bucket `{bucket}` at {endpoint}")]
    Put {
        /// The key.
        key: String,
        /// The bucket.
        bucket: String,
        /// Where the bucket is.
        endpoint: String,
        /// object_store's error.
        #[source]
        source: object_store::Error,
    },
}

/// A bucket objects are written to.
pub(crate) struct S3Target {
    store: AmazonS3,
    bucket: String,
    endpoint: String,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Target {
    /// The client for `s`. Nothing is sent until the first object.
    pub(crate) fn new(s: &S3Settings) -> Result<Self, object_store::Error> {
        crate::install_crypto_provider();
        let connect = s.timeout.min(Duration::from_secs(10));
        let mut options = ClientOptions::new()
            .with_timeout(s.timeout)
            .with_connect_timeout(connect)
            .with_user_agent(object_store::HeaderValue::from_static(crate::USER_AGENT));
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&s.bucket)
            .with_region(&s.region)
            .with_access_key_id(s.access_key_id.expose())
            .with_secret_access_key(s.secret_access_key.expose())
            .with_virtual_hosted_style_request(!s.path_style)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: 2,
                retry_timeout: s.timeout,
            });
        if let Some(endpoint) = &s.endpoint {
            options = options.with_allow_http(endpoint.starts_with("http://"));
            builder = builder.with_endpoint(bucket_endpoint(endpoint, &s.bucket, s.path_style));
        }
        let store = builder.with_client_options(options).build()?;
        Ok(Self {
            store,
            bucket: s.bucket.clone(),
            endpoint: s.endpoint_name(),
        })
    }

    /// The client, for listing and deleting (retention).
    pub(crate) fn client(&self) -> &AmazonS3 {
        &self.store
    }

    /// The bucket's name.
    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://bucket/key`, for the delivery log.
    pub(crate) fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Writes one object.
    pub(crate) async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(), S3Error> {
        let path = Path::parse(key).map_err(|source| S3Error::Key {
            key: key.to_owned(),
            source,
        })?;
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, content_type.into());
        let opts = PutOptions::from(attributes);
        self.store
            .put_opts(&path, PutPayload::from(Bytes::from(body)), opts)
            .await
            .map(|_| ())
            .map_err(|source| S3Error::Put {
                key: key.to_owned(),
                bucket: self.bucket.clone(),
                endpoint: self.endpoint.clone(),
                source,
            })
    }
}

/// The endpoint object_store expects: the service URL for path-style requests, the bucket's
/// own host (`bucket.host`) for virtual-hosted ones.
fn bucket_endpoint(endpoint: &str, bucket: &str, path_style: bool) -> String {
    if path_style {
        return endpoint.to_owned();
    }
    match url::Url::parse(endpoint) {
        Ok(mut u) => {
            let host = u.host_str().unwrap_or_default().to_owned();
            if u.set_host(Some(&format!("{bucket}.{host}"))).is_ok() {
                u.as_str().trim_end_matches('/').to_owned()
            } else {
                endpoint.to_owned()
            }
        }
        Err(_) => endpoint.to_owned(),
    }
}

impl S3Error {
    /// The failure, classified, with a message that names the bucket and the endpoint.
    pub(crate) fn into_send_error(self) -> SendError {
        let (key, bucket, endpoint, source) = match self {
            S3Error::Key { .. } => {
                let message = self.to_string();
                return SendError::final_error(message).with_source(self);
            }
            S3Error::Put {
                key,
                bucket,
                endpoint,
                source,
            } => (key, bucket, endpoint, source),
        };
        let chain = chain_text(&source);
        let code = s3_code(&chain);
        let said = code
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        let at = format!("bucket `{bucket}` at {endpoint}");
        let err = match &source {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                let status = if matches!(source, object_store::Error::Unauthenticated { .. }) {
                    401
                } else {
                    403
                };
                SendError::final_error(format!(
                    "{at} refused the upload of `{key}`: access denied{said}; check access_key_id, secret_access_key and the bucket's policy"
                ))
                .with_status(status)
            }
            object_store::Error::NotFound { .. } => SendError::final_error(format!(
                "{at} does not exist{said}; create the bucket or correct `bucket`, `endpoint` or `region`"
            ))
            .with_status(404),
            object_store::Error::AlreadyExists { .. } => SendError::retryable(format!(
                "{at}: a conflicting operation is in progress{said}; will try `{key}` again"
            ))
            .with_status(409),
            object_store::Error::Generic { .. } => match transport_kind(&source) {
                Some(kind) => SendError::retryable(format!(
                    "cannot reach {endpoint} to write `{key}` to bucket `{bucket}`: {}",
                    transport_reason(kind)
                )),
                None => by_status(&chain, &at, &key, &said),
            },
            _ => SendError::final_error(format!("{at}: cannot write `{key}`{said}")),
        };
        let excerpt = code.map(|c| truncate(&c, 300));
        err.with_excerpt(excerpt).with_source(source)
    }
}

/// A failed answer that object_store reports only in its message (5xx, 429, other 4xx).
fn by_status(chain: &str, at: &str, key: &str, said: &str) -> SendError {
    if chain.contains("incorrectly configured region") {
        return SendError::final_error(format!(
            "{at} answered with a redirect: the bucket is in another region; set `region`"
        ));
    }
    match status_in(chain) {
        Some(s) if s >= 500 || s == 429 || s == 408 => {
            SendError::retryable(format!("{at} answered {s} for `{key}`{said}")).with_status(s)
        }
        Some(s) if s >= 300 => {
            SendError::final_error(format!("{at} refused `{key}` with {s}{said}")).with_status(s)
        }
        _ => SendError::retryable(format!("{at}: the upload of `{key}` failed{said}")),
    }
}

/// The transport failure in `err`'s chain, if the request got no answer.
fn transport_kind(err: &object_store::Error) -> Option<HttpErrorKind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(h) = e.downcast_ref::<HttpError>() {
            return Some(h.kind());
        }
        current = e.source();
    }
    None
}

fn transport_reason(kind: HttpErrorKind) -> &'static str {
    match kind {
        HttpErrorKind::Connect => "the connection failed",
        HttpErrorKind::Timeout => "the request timed out",
        HttpErrorKind::Interrupted => "the connection was interrupted",
        HttpErrorKind::Decode => "the answer could not be read",
        _ => "the request failed",
    }
}

/// Every message of `err`'s cause chain, joined.
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        out.push_str(": ");
        out.push_str(&e.to_string());
        current = e.source();
    }
    out
}

/// S3's `<Code>` and `<Message>` from an error answer quoted in `chain`.
fn s3_code(chain: &str) -> Option<String> {
    let code = between(chain, "<Code>", "</Code>")?;
    Some(match between(chain, "<Message>", "</Message>") {
        Some(m) => format!("{code}: {m}"),
        None => code.to_owned(),
    })
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

/// The HTTP status object_store quotes as `status code: 503 …`.
fn status_in(chain: &str) -> Option<u16> {
    let at = chain.find("status code: ")? + "status code: ".len();
    chain.get(at..at + 3)?.parse().ok()
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_for_both_addressing_styles() {
        assert_eq!(
            bucket_endpoint("http://127.0.0.1:9000", "sales", true),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            bucket_endpoint("https://storage.example.org", "sales", false),
            "https://sales.storage.example.org"
        );
    }

    #[test]
    fn reads_codes_and_statuses_from_messages() {
        let text = "Error performing PUT http://x/b/k in 3ms - Server returned non-2xx status code: 503 Service Unavailable: <?xml?><Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>";
        assert_eq!(status_in(text), Some(503));
        assert_eq!(s3_code(text).as_deref(), Some("SlowDown: Reduce your rate"));
        let e = by_status(text, "bucket `b` at http://x", "k", "");
        assert!(e.is_retryable());
        assert_eq!(e.status_code, Some(503));
        let e = by_status(
            "status code: 400 Bad Request",
            "bucket `b` at http://x",
            "k",
            "",
        );
        assert!(!e.is_retryable());
    }
}
