//! How the HTTP provider's requests authenticate: API key (header or query), bearer, basic,
//! and OAuth 2 client credentials with a cached token that is fetched again shortly before it
//! expires or after the partner answers 401. With `credential: NAME` the auth is read from the
//! credential store at the start of each run ([`Auth::for_run`]).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use estafeta_config::Secret;
use estafeta_config::provider_http::AuthSettings;
use estafeta_store::vault::Credentials;
use reqwest::RequestBuilder;
use tokio::sync::Mutex;

use super::credential;
use crate::provider::ProviderError;

/// A token is fetched again this long before it expires.
const EARLY: Duration = Duration::from_secs(30);
/// Lifetime assumed when the token endpoint gives none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

struct Token {
    value: Secret,
    until: Instant,
    /// The token URL, client id and secret it was fetched with: a credential updated
    /// between runs gets a new token.
    client: (String, String, Secret),
}

/// Auth with its OAuth 2 token cache.
pub(crate) struct Auth {
    settings: AuthSettings,
    credentials: Option<Credentials>,
    allow_private_networks: bool,
    token: Mutex<Option<Token>>,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Auth {
    pub(crate) fn new(
        settings: AuthSettings,
        credentials: Option<Credentials>,
        allow_private_networks: bool,
    ) -> Self {
        Self {
            settings,
            credentials,
            allow_private_networks,
            token: Mutex::new(None),
        }
    }

    /// The auth of one run: the settings, or the named credential as it is now.
    pub(crate) async fn for_run(&self) -> Result<Cow<'_, AuthSettings>, ProviderError> {
        match &self.settings {
            AuthSettings::Credential(name) => credential::resolve(self.credentials.as_ref(), name)
                .await
                .map(Cow::Owned)
                .map_err(ProviderError::Credential),
            other => Ok(Cow::Borrowed(other)),
        }
    }

    /// Forgets a cached OAuth 2 token (after a 401); answers whether there was one to forget.
    pub(crate) async fn invalidate(&self, auth: &AuthSettings) -> bool {
        matches!(auth, AuthSettings::Oauth2 { .. }) && self.token.lock().await.take().is_some()
    }

    /// Adds the run's credentials to a request (fetching an OAuth 2 token if needed).
    pub(crate) async fn apply(
        &self,
        client: &reqwest::Client,
        auth: &AuthSettings,
        req: RequestBuilder,
    ) -> Result<RequestBuilder, ProviderError> {
        Ok(match auth {
            AuthSettings::None => req,
            AuthSettings::ApiKeyHeader { name, value } => req.header(name, value.expose()),
            AuthSettings::ApiKeyQuery { name, value } => req.query(&[(name, value.expose())]),
            AuthSettings::Bearer(token) => req.bearer_auth(token.expose()),
            AuthSettings::Basic { username, password } => {
                req.basic_auth(username, Some(password.expose()))
            }
            AuthSettings::Oauth2 {
                token_url,
                client_id,
                client_secret,
                scopes,
            } => {
                let token = self
                    .token(client, token_url, client_id, client_secret, scopes)
                    .await?;
                req.bearer_auth(token.expose())
            }
            // Resolved by `for_run` before any request.
            AuthSettings::Credential(name) => {
                return Err(ProviderError::Credential(
                    credential::CredentialError::NoStore(name.clone()),
                ));
            }
        })
    }

    async fn token(
        &self,
        client: &reqwest::Client,
        token_url: &str,
        client_id: &str,
        client_secret: &Secret,
        scopes: &[String],
    ) -> Result<Secret, ProviderError> {
        let key = (
            token_url.to_owned(),
            client_id.to_owned(),
            client_secret.clone(),
        );
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref()
            && t.client == key
            && Instant::now() + EARLY < t.until
        {
            return Ok(t.value.clone());
        }
        let host = super::host_of(token_url);
        let url = reqwest::Url::parse(token_url).map_err(ProviderError::Url)?;
        super::send::guard(&url, self.allow_private_networks)?;
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let answer = client
            .post(url)
            .basic_auth(client_id, Some(client_secret.expose()))
            .form(&form)
            .send()
            .await
            .map_err(|source| super::send::transport(host.clone(), source))?;
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
            client: key,
        });
        tracing::debug!(host = %host, expires_in_s = lifetime.as_secs(), "provider oauth2 token fetched");
        Ok(value)
    }
}
