//! `auth: { credential: NAME }`: the named credential, read from the credential store at each
//! run (so an update through `/v1/credentials` is used by the next run) and mapped by its type
//! to the inline auth it stands for: `api_key` → the key in its `header`, `bearer` → the
//! token, `basic` → user and password, `oauth2_client_credentials` → a token from its
//! `token_url`.

use estafeta_config::Secret;
use estafeta_config::provider_http::AuthSettings;
use estafeta_store::vault::{Credential, CredentialType, Credentials, VaultError};
use serde_json::Value;

use super::CREDENTIAL_TYPES;

/// Why a named credential could not be used for a run.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The credential store failed (or the record does not open with the key in use).
    #[error("credential `{name}` could not be read from the credential store")]
    Read {
        /// The credential.
        name: String,
        /// The cause.
        #[source]
        source: VaultError,
    },
    /// No credential has this name.
    #[error("credential `{0}` does not exist")]
    Missing(String),
    /// The credential's type is not one the HTTP provider accepts.
    #[error("credential `{name}` is of type `{kind}`, which the HTTP provider does not accept")]
    Unsupported {
        /// The credential.
        name: String,
        /// Its type.
        kind: &'static str,
    },
    /// A field its type requires is missing.
    #[error("credential `{name}` has no `{field}`")]
    Field {
        /// The credential.
        name: String,
        /// The field.
        field: &'static str,
    },
    /// The provider was built without a credential store.
    #[error("credential `{0}` is named but no credential store is available")]
    NoStore(String),
}

/// Reads credential `name` and maps it to the auth it stands for.
pub(crate) async fn resolve(
    credentials: Option<&Credentials>,
    name: &str,
) -> Result<AuthSettings, CredentialError> {
    let store = credentials.ok_or_else(|| CredentialError::NoStore(name.to_owned()))?;
    let credential = store
        .get(name)
        .await
        .map_err(|source| CredentialError::Read {
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| CredentialError::Missing(name.to_owned()))?;
    map(&credential)
}

/// The auth a credential stands for.
fn map(c: &Credential) -> Result<AuthSettings, CredentialError> {
    if !CREDENTIAL_TYPES.contains(&c.kind.as_str()) {
        return Err(CredentialError::Unsupported {
            name: c.name.clone(),
            kind: c.kind.as_str(),
        });
    }
    let missing = |field| CredentialError::Field {
        name: c.name.clone(),
        field,
    };
    let public = |field| {
        c.public_str(field)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing(field))
    };
    let private = |field| {
        c.private(field)
            .map(|v| Secret::new(v.expose().to_owned()))
            .ok_or_else(|| missing(field))
    };
    Ok(match c.kind {
        CredentialType::ApiKey => AuthSettings::ApiKeyHeader {
            name: public("header")?,
            value: private("key")?,
        },
        CredentialType::Bearer => AuthSettings::Bearer(private("token")?),
        CredentialType::Basic => AuthSettings::Basic {
            username: public("username")?,
            password: private("password")?,
        },
        CredentialType::Oauth2ClientCredentials => AuthSettings::Oauth2 {
            token_url: public("token_url")?,
            client_id: public("client_id")?,
            client_secret: private("client_secret")?,
            scopes: c
                .public
                .get("scopes")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use estafeta_store::vault::SecretValue;
    use serde_json::json;

    use super::*;

    fn credential(kind: CredentialType, public: Value, private: &[(&str, &str)]) -> Credential {
        Credential {
            name: "partner".to_owned(),
            kind,
            public: public.as_object().cloned().unwrap_or_default(),
            private: private
                .iter()
                .map(|(k, v)| ((*k).to_owned(), SecretValue::new((*v).to_owned())))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn each_type_maps_to_its_inline_auth() {
        let api = credential(
            CredentialType::ApiKey,
            json!({"header": "X-Key"}),
            &[("key", "k")],
        );
        assert!(
            matches!(map(&api).unwrap(), AuthSettings::ApiKeyHeader { name, value } if name == "X-Key" && value.expose() == "k")
        );
        let oauth = credential(
            CredentialType::Oauth2ClientCredentials,
            json!({"token_url": "https://id.example/token", "client_id": "c", "scopes": ["a", "b"]}),
            &[("client_secret", "s")],
        );
        assert!(
            matches!(map(&oauth).unwrap(), AuthSettings::Oauth2 { scopes, .. } if scopes == ["a", "b"])
        );
        let basic = credential(CredentialType::Basic, json!({"username": "u"}), &[]);
        let err = map(&basic).unwrap_err().to_string();
        assert_eq!(err, "credential `partner` has no `password`");
    }
}
