//! The JSON Schema of the HTTP provider's settings (hand-written, kept beside the config
//! types in `estafeta_config::provider_http`; a test checks it names every documented field).

use serde_json::{Value, json};

/// A string that may hold `${secret:…}`/`${env:…}` and template expressions.
fn templated(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

/// The schema of `provider: { kind: http, … }`.
pub(crate) fn settings_schema() -> Value {
    let secret =
        json!({ "type": "string", "format": "password", "description": "Usually ${secret:NAME}." });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "HTTP provider",
        "type": "object",
        "required": ["kind", "url"],
        "additionalProperties": false,
        "properties": {
            "kind": { "const": "http" },
            "method": { "type": "string", "default": "GET" },
            "url": templated("URL template, e.g. https://api.example/v1/sales?day={{ yesterday }}"),
            "query": { "type": "object", "additionalProperties": templated("Query value template") },
            "headers": { "type": "object", "additionalProperties": templated("Header value template") },
            "auth": { "oneOf": [
                { "type": "object", "title": "API key", "required": ["kind", "value"], "additionalProperties": false,
                  "properties": { "kind": { "const": "api_key" }, "header": { "type": "string" }, "query": { "type": "string" }, "value": secret } },
                { "type": "object", "title": "Bearer token", "required": ["kind", "token"], "additionalProperties": false,
                  "properties": { "kind": { "const": "bearer" }, "token": secret } },
                { "type": "object", "title": "Basic", "required": ["kind", "username", "password"], "additionalProperties": false,
                  "properties": { "kind": { "const": "basic" }, "username": { "type": "string" }, "password": secret } },
                { "type": "object", "title": "OAuth 2 client credentials", "required": ["kind", "token_url", "client_id", "client_secret"], "additionalProperties": false,
                  "properties": { "kind": { "const": "oauth2" }, "token_url": { "type": "string", "format": "uri" }, "client_id": { "type": "string" },
                                  "client_secret": secret, "scopes": { "type": "array", "items": { "type": "string" } } } },
                { "type": "object", "title": "Stored credential", "required": ["credential"], "additionalProperties": false,
                  "properties": { "credential": { "type": "string", "description": "A credential's name in the credential store (api_key, bearer, basic or oauth2_client_credentials), read at each run." } } }
            ] },
            "pagination": { "oneOf": [
                { "type": "object", "title": "Page number", "required": ["kind"], "additionalProperties": false,
                  "properties": { "kind": { "const": "page_number" }, "param": { "type": "string", "default": "page" },
                                  "start": { "type": "integer", "default": 1 }, "size_param": { "type": "string" }, "size": { "type": "integer", "minimum": 1 } } },
                { "type": "object", "title": "Offset and limit", "required": ["kind"], "additionalProperties": false,
                  "properties": { "kind": { "const": "offset_limit" }, "offset_param": { "type": "string", "default": "offset" },
                                  "limit_param": { "type": "string", "default": "limit" }, "limit": { "type": "integer", "minimum": 1, "default": 100 } } },
                { "type": "object", "title": "Cursor in the body", "required": ["kind", "path"], "additionalProperties": false,
                  "properties": { "kind": { "const": "cursor" }, "path": { "type": "string" }, "param": { "type": "string", "default": "cursor" } } },
                { "type": "object", "title": "Link header", "required": ["kind"], "additionalProperties": false,
                  "properties": { "kind": { "const": "link_header" } } },
                { "type": "object", "title": "Next URL in the body", "required": ["kind", "path"], "additionalProperties": false,
                  "properties": { "kind": { "const": "next_url" }, "path": { "type": "string" } } }
            ] },
            "records": { "type": "string", "default": "$[*]", "description": "JSON path to the records" },
            "cursor": { "type": "object", "required": ["field"], "additionalProperties": false,
                        "properties": { "field": { "type": "string" }, "initial": { "type": "string" } } },
            "emit": { "type": "object", "additionalProperties": false,
                      "properties": { "per": { "enum": ["record", "run"], "default": "record" },
                                      "type": { "type": "string" }, "id": { "type": "string" } } },
            "rate_limit": { "type": "string", "pattern": "^[0-9]+/(s|sec|second|m|min|minute|h|hour)$" },
            "attempts": { "type": "integer", "minimum": 1, "maximum": 20, "default": 5 },
            "timeout": { "type": "string", "default": "30s" },
            "max_pages": { "type": "integer", "minimum": 1, "default": 10000 },
            "allow_private_networks": { "type": "boolean", "default": false, "description": "Let requests reach private, loopback and link-local addresses." }
        }
    })
}
