//! Bearer-token authentication. Tokens are compared by their SHA-256 digest in constant time;
//! the token itself is never stored or logged.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use estafeta_core::TenantId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::problem::Problem;

/// Who made the request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The tenant whose data the request may see.
    pub tenant: TenantId,
    /// The token's name, recorded as the actor in the audit log (`admin` for the admin
    /// token).
    pub name: String,
    /// Whether the token may do admin-only things (`POST /v1/purge`, `GET /v1/audit`).
    pub admin: bool,
}

/// SHA-256 of a token, hex-encoded: how tokens are kept.
#[must_use]
pub fn token_digest(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tokens the server accepts.
#[derive(Debug, Clone)]
pub struct Auth {
    admin_digest: [u8; 32],
    /// Further tokens by digest, with who they are.
    others: Vec<([u8; 32], String, bool)>,
}

impl Auth {
    /// Accepts the admin token whose hex SHA-256 digest is given.
    ///
    /// # Panics
    /// Never: a malformed digest accepts no token.
    #[must_use]
    pub fn from_digest(hex: &str) -> Self {
        let mut admin_digest = [0u8; 32];
        let bytes = hex.as_bytes();
        if bytes.len() == 64 {
            for (i, chunk) in bytes.chunks(2).enumerate() {
                let s = std::str::from_utf8(chunk).unwrap_or("zz");
                admin_digest[i] = u8::from_str_radix(s, 16).unwrap_or(0);
            }
        } else {
            // Nothing hashes to all ones in practice; no token will match.
            admin_digest = [0xff; 32];
        }
        Self {
            admin_digest,
            others: Vec::new(),
        }
    }

    /// Accepts this admin token.
    #[must_use]
    pub fn from_token(token: &str) -> Self {
        Self::from_digest(&token_digest(token))
    }

    /// Also accepts `token`, named `name` (the actor in the audit log); only an `admin`
    /// token may purge and read the audit log.
    #[must_use]
    pub fn with_token(mut self, token: &str, name: &str, admin: bool) -> Self {
        let d = Sha256::digest(token.as_bytes());
        let mut digest = [0u8; 32];
        digest.copy_from_slice(d.as_slice());
        self.others.push((digest, name.to_owned(), admin));
        self
    }

    fn check(&self, token: &str) -> Option<Principal> {
        let d = Sha256::digest(token.as_bytes());
        if bool::from(d.as_slice().ct_eq(&self.admin_digest)) {
            return Some(Principal {
                tenant: TenantId::default(),
                name: "admin".to_owned(),
                admin: true,
            });
        }
        let mut found = None;
        for (digest, name, admin) in &self.others {
            if bool::from(d.as_slice().ct_eq(digest)) {
                found = Some(Principal {
                    tenant: TenantId::default(),
                    name: name.clone(),
                    admin: *admin,
                });
            }
        }
        found
    }
}

/// Middleware: rejects requests without a valid bearer token with 401.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match token.and_then(|t| state.auth.check(t)) {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => {
            let mut resp = Problem::unauthorized().into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"estafeta\""),
            );
            resp
        }
    }
}
