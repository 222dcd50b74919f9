//! How the HTTP provider's requests authenticate: API key (header or query), bearer, basic,
//! and OAuth 2 client credentials with a cached token that is fetched again shortly before it
//! expires or after the partner answers 401.

use std::time::{Duration, Instant};

use estafeta_config::Secret;
use estafeta_config::provider_http::AuthSettings;
use reqwest::RequestBuilder;
use tokio::sync::Mutex;

use crate::provider::ProviderError;

/// A token is fetched again this long before it expires.
const EARLY: Duration = Duration::from_secs(30);
/// Lifetime assumed when the token endpoint gives none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

struct Token {
    value: Secret,
    until: Instant,
}

/// Auth with its OAuth 2 token cache.
pub(crate) struct Auth {
    settings: AuthSettings,
    token: Mutex<Option<Token>>,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Auth {
    pub(crate) fn new(settings: AuthSettings) -> Self {
        Self {
            settings,
            token: Mutex::new(None),
        }
    }

    /// Forgets a cached OAuth 2 token (after a 401); answers whether there was one to forget.
    pub(crate) async fn invalidate(&self) -> bool {
        matches!(self.settings, AuthSettings::Oauth2 { .. })
            && self.token.lock().await.take().is_some()
    }

    /// Adds the credentials to a request (fetching an OAuth 2 token if needed).
    pub(crate) async fn apply(
        &self,
        client: &reqwest::Client,
        req: RequestBuilder,
    ) -> Result<RequestBuilder, ProviderError> {
        Ok(match &self.settings {
            AuthSettings::None => req,
            AuthSettings::ApiKeyHeader { name, value } => req.header(name, value.expose()),
            AuthSettings::ApiKeyQuery { name, value } => req.query(&[(name, value.expose())]),
            AuthSettings::Bearer(token) => req.bearer_auth(token.expose()),
            AuthSettings::Basic { username, password } => {
                req.basic_auth(username, Some(password.expose()))
            }
            AuthSettings::Oauth2 { .. } => {
                let token = self.token(client).await?;
                req.bearer_auth(token.expose())
            }
        })
    }

    async fn token(&self, client: &reqwest::Client) -> Result<Secret, ProviderError> {
        let AuthSettings::Oauth2 {
            token_url,
            client_id,
            client_secret,
            scopes,
        } = &self.settings
        else {
            return Err(ProviderError::Answer("not OAuth 2".to_owned()));
        };
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref()
            && Instant::now() + EARLY < t.until
        {
            return Ok(t.value.clone());
        }
        let host = super::host_of(token_url);
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let answer = client
            .post(token_url)
            .basic_auth(client_id, Some(client_secret.expose()))
            .form(&form)
            .send()
            .await
            .map_err(|source| ProviderError::request(host.clone(), source))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(ProviderError::Status {
                host,
                status: status.as_u16(),
            });
        }
        let body: TokenAnswer = answer
            .json()
            .await
            .map_err(|source| ProviderError::request(host.clone(), source))?;
        let lifetime = body
            .expires_in
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let value = Secret::new(body.access_token);
        *cached = Some(Token {
            value: value.clone(),
            until: Instant::now() + lifetime,
        });
        tracing::debug!(host = %host, expires_in_s = lifetime.as_secs(), "provider oauth2 token fetched");
        Ok(value)
    }
}
