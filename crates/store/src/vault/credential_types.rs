//! The declared credential types: which fields each has, which of them are private (sealed at
//! rest, never returned), and the check of a credential's fields against its type.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value, json};

/// A kind of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialType {
    /// A key sent in a request header: `header` (public), `key` (private).
    ApiKey,
    /// `Authorization: Bearer <token>`: `token` (private).
    Bearer,
    /// HTTP basic auth: `username` (public), `password` (private).
    Basic,
    /// OAuth 2.0 client credentials grant: `token_url`, `client_id`, `scopes` (public),
    /// `client_secret` (private).
    Oauth2ClientCredentials,
}

/// A credential's fields once checked: public values, and private strings to be sealed.
pub type CheckedFields = (Map<String, Value>, BTreeMap<String, String>);

/// One field of a credential type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The field's name.
    pub name: &'static str,
    /// Whether it is sealed at rest and never returned.
    pub private: bool,
    /// Whether a credential must have it.
    pub required: bool,
    /// What it holds.
    pub description: &'static str,
}

const fn field(
    name: &'static str,
    private: bool,
    required: bool,
    description: &'static str,
) -> FieldSpec {
    FieldSpec {
        name,
        private,
        required,
        description,
    }
}

const API_KEY: &[FieldSpec] = &[
    field(
        "header",
        false,
        true,
        "The request header that carries the key.",
    ),
    field("key", true, true, "The key."),
];
const BEARER: &[FieldSpec] = &[field("token", true, true, "The bearer token.")];
const BASIC: &[FieldSpec] = &[
    field("username", false, true, "The user name."),
    field("password", true, true, "The password."),
];
const OAUTH2: &[FieldSpec] = &[
    field(
        "token_url",
        false,
        true,
        "The token endpoint (http or https URL).",
    ),
    field("client_id", false, true, "The client id."),
    field(
        "scopes",
        false,
        false,
        "Scopes to ask for (a list of strings).",
    ),
    field("client_secret", true, true, "The client secret."),
];

impl CredentialType {
    /// Every type.
    pub const ALL: [Self; 4] = [
        Self::ApiKey,
        Self::Bearer,
        Self::Basic,
        Self::Oauth2ClientCredentials,
    ];

    /// The type's name, as written in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Bearer => "bearer",
            Self::Basic => "basic",
            Self::Oauth2ClientCredentials => "oauth2_client_credentials",
        }
    }

    /// The type's fields.
    #[must_use]
    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            Self::ApiKey => API_KEY,
            Self::Bearer => BEARER,
            Self::Basic => BASIC,
            Self::Oauth2ClientCredentials => OAUTH2,
        }
    }

    /// A JSON Schema of the type's fields (private ones are marked `writeOnly`), for forms.
    #[must_use]
    pub fn json_schema(self) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for f in self.fields() {
            let mut p = if f.name == "scopes" {
                json!({ "type": "array", "items": { "type": "string" } })
            } else {
                json!({ "type": "string", "minLength": 1 })
            };
            p["description"] = json!(f.description);
            if f.private {
                p["writeOnly"] = json!(true);
            }
            properties.insert(f.name.to_owned(), p);
            if f.required {
                required.push(f.name);
            }
        }
        json!({
            "title": self.as_str(),
            "type": "object",
            "additionalProperties": false,
            "properties": properties,
            "required": required,
        })
    }

    /// Checks `fields` against the type and splits them into public values and private
    /// strings. A required private field may be missing when `kept` says it is already set
    /// (an update that does not repeat it keeps it).
    ///
    /// # Errors
    /// Every problem, one message per field.
    pub fn check(
        self,
        fields: &Map<String, Value>,
        kept: &dyn Fn(&str) -> bool,
    ) -> Result<CheckedFields, Vec<String>> {
        let mut problems = Vec::new();
        let mut public = Map::new();
        let mut private = BTreeMap::new();
        for name in fields.keys() {
            if !self.fields().iter().any(|f| f.name == name) {
                problems.push(format!(
                    "`{name}` is not a field of a `{}` credential",
                    self.as_str()
                ));
            }
        }
        for spec in self.fields() {
            let value = fields.get(spec.name).filter(|v| !v.is_null());
            match value {
                None if spec.required && !(spec.private && kept(spec.name)) => {
                    problems.push(format!("`{}` is required", spec.name));
                }
                None => {}
                Some(v) => match check_value(spec, v) {
                    Err(p) => problems.push(p),
                    Ok(()) if spec.private => {
                        if let Some(s) = v.as_str() {
                            private.insert(spec.name.to_owned(), s.to_owned());
                        }
                    }
                    Ok(()) => {
                        public.insert(spec.name.to_owned(), v.clone());
                    }
                },
            }
        }
        if problems.is_empty() {
            Ok((public, private))
        } else {
            Err(problems)
        }
    }
}

fn check_value(spec: &FieldSpec, v: &Value) -> Result<(), String> {
    let name = spec.name;
    if name == "scopes" {
        let ok = v
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty())));
        return if ok {
            Ok(())
        } else {
            Err(format!("`{name}` must be a list of non-empty strings"))
        };
    }
    let Some(s) = v.as_str().filter(|s| !s.is_empty()) else {
        return Err(format!("`{name}` must be a non-empty string"));
    };
    if name == "token_url" && !(s.starts_with("https://") || s.starts_with("http://")) {
        return Err(format!("`{name}` must be an http or https URL"));
    }
    if name == "header"
        && !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(format!("`{name}` is not a valid HTTP header name"));
    }
    Ok(())
}

impl FromStr for CredentialType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "`{s}` is not a credential type (known: {})",
                    known.join(", ")
                )
            })
    }
}

impl fmt::Display for CredentialType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn fields_are_split_into_public_and_private() {
        let (public, private) = CredentialType::ApiKey
            .check(&obj(json!({"header": "X-Api-Key", "key": "k1"})), &|_| {
                false
            })
            .expect("valid");
        assert_eq!(public.get("header"), Some(&json!("X-Api-Key")));
        assert_eq!(private.get("key").map(String::as_str), Some("k1"));
        assert!(!public.contains_key("key"));
    }

    #[test]
    fn every_problem_is_reported() {
        let errs = CredentialType::Oauth2ClientCredentials
            .check(
                &obj(json!({"token_url": "ftp://x", "scopes": "a", "extra": 1})),
                &|_| false,
            )
            .expect_err("invalid");
        let text = errs.join("\n");
        for needle in ["extra", "token_url", "scopes", "client_id", "client_secret"] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }

    #[test]
    fn a_kept_private_field_may_be_left_out() {
        let fields = obj(json!({"username": "u"}));
        assert!(CredentialType::Basic.check(&fields, &|_| false).is_err());
        assert!(
            CredentialType::Basic
                .check(&fields, &|f| f == "password")
                .is_ok()
        );
    }

    #[test]
    fn names_round_trip_and_schemas_mark_private_fields() {
        for t in CredentialType::ALL {
            assert_eq!(t.as_str().parse::<CredentialType>(), Ok(t));
        }
        let s = CredentialType::Bearer.json_schema();
        assert_eq!(s["properties"]["token"]["writeOnly"], json!(true));
        assert!("nope".parse::<CredentialType>().is_err());
    }
}
