//! A small reader of Internet messages (RFC 5322 and MIME) for asserting what the fake SMTP
//! server received: header unfolding, RFC 2047 encoded words, `quoted-printable` and
//! `base64` bodies, and nested multiparts. Enough for what a mail library sends; not a
//! general parser (no charsets other than UTF-8 and ASCII, no `message/rfc822`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A parsed message, or one part of a multipart message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMail {
    /// Headers in order: name as written, value unfolded (encoded words left as sent).
    pub headers: Vec<(String, String)>,
    /// The media type, lower-case (`text/plain` when none is given).
    pub content_type: String,
    /// The body with its transfer encoding undone, as UTF-8 (lossy); empty for multiparts.
    pub body: String,
    /// The parts of a multipart, in order.
    pub parts: Vec<ParsedMail>,
}

impl ParsedMail {
    /// Parses a message as transferred (CRLF or LF line endings).
    #[must_use]
    pub fn parse(data: &[u8]) -> Self {
        let text = String::from_utf8_lossy(data).replace("\r\n", "\n");
        Self::parse_text(&text)
    }

    fn parse_text(text: &str) -> Self {
        let (head, body) = match text.split_once("\n\n") {
            Some((h, b)) => (h, b),
            None if text.starts_with('\n') => ("", &text[1..]),
            None => (text, ""),
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                // Unfolding (RFC 5322 §2.2.3): the line break goes, the whitespace stays.
                if let Some((_, value)) = headers.last_mut() {
                    value.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        let raw = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let (content_type, params) = raw("content-type")
            .map(|v| media_type(&v))
            .unwrap_or_else(|| ("text/plain".to_owned(), Vec::new()));
        let mut mail = Self {
            headers: headers.clone(),
            content_type,
            body: String::new(),
            parts: Vec::new(),
        };
        let boundary = params
            .iter()
            .find(|(k, _)| k == "boundary")
            .map(|(_, v)| v.clone());
        match boundary {
            Some(b) if mail.content_type.starts_with("multipart/") => {
                mail.parts = split_parts(body, &b)
                    .into_iter()
                    .map(Self::parse_text)
                    .collect();
            }
            _ => {
                let encoding = raw("content-transfer-encoding")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                mail.body = match encoding.trim() {
                    "base64" => {
                        let clean: String = body.chars().filter(|c| !c.is_whitespace()).collect();
                        String::from_utf8_lossy(&STANDARD.decode(clean).unwrap_or_default())
                            .into_owned()
                    }
                    "quoted-printable" => {
                        String::from_utf8_lossy(&quoted_printable(body)).into_owned()
                    }
                    _ => body.to_owned(),
                };
            }
        }
        mail
    }

    /// The first header of that name (case-insensitive), encoded words decoded.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_words(v))
    }

    /// Every header of that name, decoded, in order.
    #[must_use]
    pub fn headers_named(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_words(v))
            .collect()
    }

    /// The first part (this message included) whose media type is `media_type`.
    #[must_use]
    pub fn part(&self, media_type: &str) -> Option<&ParsedMail> {
        if self.parts.is_empty() {
            return (self.content_type == media_type).then_some(self);
        }
        self.parts.iter().find_map(|p| p.part(media_type))
    }

    /// The `text/plain` body, if there is one.
    #[must_use]
    pub fn text(&self) -> Option<&str> {
        self.part("text/plain").map(|p| p.body.as_str())
    }

    /// The `text/html` body, if there is one.
    #[must_use]
    pub fn html(&self) -> Option<&str> {
        self.part("text/html").map(|p| p.body.as_str())
    }
}

/// `type/subtype; k=v; k="v"` → the lower-case media type and the parameters (keys
/// lower-case, quotes removed).
fn media_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut pieces = value.split(';');
    let ty = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = pieces
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.trim().to_ascii_lowercase(), v.to_owned()))
        })
        .collect();
    (ty, params)
}

/// The bodies between `--boundary` lines, up to `--boundary--`.
fn split_parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset: usize = 0;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == delimiter || trimmed == format!("{delimiter}--") {
            if let Some(s) = start {
                // The line break before a delimiter belongs to the delimiter.
                let end = offset.saturating_sub(1).max(s);
                parts.push(&body[s..end]);
            }
            if trimmed.ends_with("--") && trimmed != delimiter {
                return parts;
            }
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    parts
}

/// Undoes `quoted-printable` (RFC 2045 §6.7): `=XX` escapes and `=` soft line breaks.
fn quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if bytes.get(i + 1) == Some(&b'\r') && bytes.get(i + 2) == Some(&b'\n') => {
                i += 3;
            }
            b'=' => match bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(b'=');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`); whitespace between two
/// encoded words is dropped, as the RFC says.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut pending_space = String::new();
    let mut last_was_word = false;
    while !rest.is_empty() {
        if let Some((decoded, used)) = encoded_word(rest) {
            if !last_was_word {
                out.push_str(&pending_space);
            }
            pending_space.clear();
            out.push_str(&decoded);
            rest = &rest[used..];
            last_was_word = true;
            continue;
        }
        let Some(ch) = rest.chars().next() else {
            break;
        };
        if ch.is_whitespace() {
            pending_space.push(ch);
        } else {
            out.push_str(&pending_space);
            pending_space.clear();
            out.push(ch);
            last_was_word = false;
        }
        rest = &rest[ch.len_utf8()..];
    }
    out.push_str(&pending_space);
    out
}

/// One encoded word at the start of `s`: its text and the bytes it spans.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let (charset, body) = body.split_once('?')?;
    let (encoding, body) = body.split_once('?')?;
    let end = body.find("?=")?;
    let text = &body[..end];
    if charset.is_empty() || text.contains(char::is_whitespace) {
        return None;
    }
    let bytes = match encoding.to_ascii_lowercase().as_str() {
        "b" => STANDARD.decode(text).ok()?,
        "q" => quoted_printable(&text.replace('_', " ")),
        _ => return None,
    };
    let used = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), used))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_headers_encoded_words_and_alternatives() {
        let raw = concat!(
            "From: Estafeta <alerts@example.org>\r\n",
            "Subject: =?utf-8?b?T3JkZW0gNzcg4oCU?=\r\n",
            " =?utf-8?q?_em_execu=C3=A7=C3=A3o?=\r\n",
            "X-Long: first\r\n\tsecond\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: multipart/alternative;\r\n boundary=\"b1\"\r\n",
            "\r\n",
            "--b1\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Content-Transfer-Encoding: quoted-printable\r\n",
            "\r\n",
            "caf=C3=A9 & a very long line that was =\r\nsoft-broken\r\n",
            "--b1\r\n",
            "Content-Type: text/html; charset=utf-8\r\n",
            "Content-Transfer-Encoding: base64\r\n",
            "\r\n",
            "PGI+Y2Fmw6k8L2I+\r\n",
            "--b1--\r\n",
        );
        let m = ParsedMail::parse(raw.as_bytes());
        assert_eq!(
            m.header("subject").as_deref(),
            Some("Ordem 77 — em execução")
        );
        assert_eq!(m.header("x-long").as_deref(), Some("first\tsecond"));
        assert_eq!(m.content_type, "multipart/alternative");
        assert_eq!(
            m.text(),
            Some("café & a very long line that was soft-broken")
        );
        assert_eq!(m.html(), Some("<b>café</b>"));
        assert_eq!(m.parts.len(), 2);
    }

    #[test]
    fn a_single_part_message_is_its_own_text() {
        let m = ParsedMail::parse(b"Subject: plain words\n\nline 1\nline 2");
        assert_eq!(m.header("Subject").as_deref(), Some("plain words"));
        assert_eq!(m.text(), Some("line 1\nline 2"));
        assert_eq!(m.html(), None);
    }
}
