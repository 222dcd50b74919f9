//! Standard Webhooks signatures: `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`
//! with keys written `whsec_<base64>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a signing secret was refused. Never carries the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret does not start with `whsec_`.
    #[error("the signing secret must start with `whsec_`")]
    MissingPrefix,
    /// The part after `whsec_` is not base64.
    #[error("the signing secret is not `whsec_` followed by base64")]
    NotBase64(#[source] base64::DecodeError),
    /// The decoded key is empty.
    #[error("the signing secret is empty")]
    Empty,
}

/// Decodes a `whsec_<base64>` secret into the HMAC key bytes.
///
/// # Errors
/// [`SecretError`] when the prefix is missing, the rest is not base64 or decodes to nothing.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SecretError::MissingPrefix)?;
    let key = STANDARD.decode(encoded).map_err(SecretError::NotBase64)?;
    if key.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(key)
}

fn mac(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for one message: `v1,<base64 signature>`.
#[must_use]
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(key, msg_id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// True when any `v1,` signature in `header` (space-separated, as the spec allows) matches.
/// Comparison is constant-time. The caller checks the timestamp's tolerance.
#[must_use]
pub fn verify(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    header.split_whitespace().any(|candidate| {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            return false;
        };
        let Ok(tag) = STANDARD.decode(encoded) else {
            return false;
        };
        mac(key, msg_id, timestamp, body).verify_slice(&tag).is_ok()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification, checked independently with
    // Python's `hmac` module.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_specification_example() {
        let key = decode_secret(SECRET).unwrap();
        assert_eq!(sign(&key, MSG_ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn verifies_among_several_signatures() {
        let key = decode_secret(SECRET).unwrap();
        assert!(verify(&key, MSG_ID, TIMESTAMP, BODY, SIGNATURE));
        let several = format!("v1,bm9wZQ== v2,whatever {SIGNATURE}");
        assert!(verify(&key, MSG_ID, TIMESTAMP, BODY, &several));
        assert!(!verify(&key, MSG_ID, TIMESTAMP + 1, BODY, SIGNATURE));
        assert!(!verify(&key, "msg_other", TIMESTAMP, BODY, SIGNATURE));
        assert!(!verify(&key, MSG_ID, TIMESTAMP, b"{}", SIGNATURE));
        assert!(!verify(b"other key", MSG_ID, TIMESTAMP, BODY, SIGNATURE));
        assert!(!verify(&key, MSG_ID, TIMESTAMP, BODY, "v1,not base64!"));
        assert!(!verify(&key, MSG_ID, TIMESTAMP, BODY, ""));
    }

    #[test]
    fn refuses_malformed_secrets_without_echoing_them() {
        assert!(matches!(
            decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::MissingPrefix)
        ));
        let err = decode_secret("whsec_not*base64").unwrap_err();
        assert!(matches!(err, SecretError::NotBase64(_)));
        assert!(!err.to_string().contains("not*base64"));
        assert!(matches!(decode_secret("whsec_"), Err(SecretError::Empty)));
    }
}
