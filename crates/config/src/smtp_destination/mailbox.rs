//! Mailboxes as written in the configuration: `name@example.org` or
//! `Display Name <name@example.org>`, checked by the same rules the mail library applies
//! (the local part and domain rules of the `email_address` crate, IDNA for domains).

use std::fmt;
use std::net::IpAddr;

/// A validated mailbox: an address with an optional display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Display name (`Estafeta` in `Estafeta <alerts@example.org>`).
    pub name: Option<String>,
    /// The address, `local@domain`.
    pub address: String,
}

impl Mailbox {
    /// The domain part of the address.
    #[must_use]
    pub fn domain(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map_or(self.address.as_str(), |(_, d)| d)
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            // A name with characters RFC 5322 reserves is written as a quoted string.
            Some(name)
                if name.contains([
                    '(', ')', '<', '>', '[', ']', ':', ';', '@', '\\', ',', '.', '"',
                ]) =>
            {
                let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
                write!(f, "\"{quoted}\" <{}>", self.address)
            }
            Some(name) => write!(f, "{name} <{}>", self.address),
            None => f.write_str(&self.address),
        }
    }
}

/// Parses `local@domain` or `Display Name <local@domain>` (the name may be in double
/// quotes). The reason names what is wrong.
///
/// # Errors
/// Why the text is not a mailbox.
pub fn parse_mailbox(text: &str) -> Result<Mailbox, &'static str> {
    let text = text.trim();
    let (name, address) = match text.strip_suffix('>') {
        Some(rest) => {
            let (name, addr) = rest
                .rsplit_once('<')
                .ok_or("a `>` without its `<` around the address")?;
            let name = name.trim();
            let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
                // A quoted string: `\"` and `\\` stand for `"` and `\`.
                Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
                None => name.to_owned(),
            };
            let name = name.trim();
            if name.chars().any(char::is_control) {
                return Err("the display name contains control characters");
            }
            ((!name.is_empty()).then(|| name.to_owned()), addr.trim())
        }
        None if text.contains(['<', '>']) => {
            return Err("write `Name <name@example.org>` with the address in `<…>` at the end");
        }
        None => (None, text),
    };
    let (local, domain) = address
        .rsplit_once('@')
        .ok_or("an address needs an `@` between the mailbox name and the domain")?;
    if local.is_empty() {
        return Err("nothing before the `@`");
    }
    if domain.is_empty() {
        return Err("the domain after the `@` is missing");
    }
    if !email_address::EmailAddress::is_valid_local_part(local) {
        return Err("the part before the `@` has characters an address cannot carry");
    }
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        if literal.parse::<IpAddr>().is_err() {
            return Err("the address literal after the `@` is not an IP address");
        }
    } else {
        match url::Host::parse(domain) {
            Ok(url::Host::Domain(d)) if email_address::EmailAddress::is_valid_domain(&d) => {
                if !d.trim_end_matches('.').contains('.') {
                    return Err("the domain after the `@` needs a dot, e.g. `example.org`");
                }
            }
            Ok(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
                return Err("an IP address after the `@` goes in brackets, e.g. `a@[192.0.2.1]`");
            }
            _ => return Err("the domain after the `@` is not valid"),
        }
    }
    Ok(Mailbox {
        name,
        address: format!("{local}@{domain}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_parse_like_mail_clients_write_them() {
        let m = parse_mailbox("Estafeta <alerts@example.org>").unwrap();
        assert_eq!(m.to_string(), "Estafeta <alerts@example.org>");
        let m = parse_mailbox("  <alerts@example.org> ").unwrap();
        assert_eq!(m.name, None);
        let m = parse_mailbox("\"Ops, Night Shift\" <ops+night@example.org>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Ops, Night Shift"));
        assert_eq!(
            m.to_string(),
            "\"Ops, Night Shift\" <ops+night@example.org>"
        );
        assert_eq!(m.address, "ops+night@example.org");
        let m = parse_mailbox(r#""Ana \"AB\" Silva" <ana@example.org>"#).unwrap();
        assert_eq!(m.name.as_deref(), Some(r#"Ana "AB" Silva"#));
        assert_eq!(parse_mailbox(&m.to_string()).unwrap(), m);
        assert!(parse_mailbox("josé@exämple.org").is_ok());
        assert!(parse_mailbox("a@[192.0.2.1]").is_ok());
        for bad in [
            "",
            "plain",
            "@example.org",
            "a@",
            "a b@example.org",
            "a@localhost",
            "a@exa mple.org",
            "Name a@example.org>",
            "Name <a@example.org",
            "a@[not-an-ip]",
        ] {
            assert!(parse_mailbox(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
