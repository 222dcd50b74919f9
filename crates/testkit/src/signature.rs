//! Standard Webhooks signature checking for the local receiver, written independently of
//! the destinations crate so the two check each other.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key bytes of a `whsec_<base64>` secret.
pub(crate) fn decode_secret(whsec: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(whsec.strip_prefix("whsec_")?)
        .ok()
        .filter(|k| !k.is_empty())
}

/// True when `webhook-signature` holds a `v1` signature of
/// `{webhook-id}.{webhook-timestamp}.{body}` under `key`.
pub(crate) fn verify_request(key: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    ) else {
        return false;
    };
    signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| {
            let Ok(tag) = STANDARD.decode(sig) else {
                return false;
            };
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
                return false;
            };
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            mac.verify_slice(&tag).is_ok()
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn verifies_the_specification_example() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "webhook-id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap(),
        );
        headers.insert("webhook-timestamp", "1614265330".parse().unwrap());
        headers.insert(
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
                .parse()
                .unwrap(),
        );
        assert!(verify_request(&key, &headers, br#"{"test": 2432232314}"#));
        assert!(!verify_request(&key, &headers, br#"{"test": 1}"#));
        headers.remove("webhook-id");
        assert!(!verify_request(&key, &headers, br#"{"test": 2432232314}"#));
        assert!(decode_secret("MfKQ").is_none());
    }
}
