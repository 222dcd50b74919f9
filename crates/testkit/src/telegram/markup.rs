//! The three `parse_mode`s of `sendMessage`, checked against the Bot API's documented
//! formatting rules (<https://core.telegram.org/bots/api#formatting-options>). Each parser
//! returns the text without markup, or what follows `can't parse entities: ` in the error.

/// An entity of `MarkdownV2` that is open until its closing markup; errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    Code,
    Pre,
    TextUrl,
    CustomEmoji,
    BlockQuote,
}

fn no_end(kind: Kind, at: usize) -> String {
    format!("Can't find end of {kind:?} entity at byte offset {at}")
}

fn reserved(c: char) -> String {
    format!("Character '{c}' is reserved and must be escaped with the preceding '\\'")
}

/// The body of a pre block: a first line without spaces names the language and is dropped.
fn pre_body(body: &str) -> &str {
    match body.split_once('\n') {
        Some((language, code)) if !language.contains(char::is_whitespace) => code,
        _ => body,
    }
}

/// The character a `\` escapes at the start of `s`: any with a code from 1 to 126.
fn escaped(s: &str) -> Option<char> {
    s.strip_prefix('\\')?
        .chars()
        .next()
        .filter(|c| (1..=126).contains(&u32::from(*c)))
}

/// Reads `s` from `from` up to the first unescaped `end`, where only escapes are markup:
/// the text read, unescaped, and the offset after `end`.
fn until(s: &str, from: usize, end: &str) -> Option<(String, usize)> {
    let mut text = String::new();
    let mut i = from;
    while i < s.len() {
        let rest = &s[i..];
        if rest.starts_with(end) {
            return Some((text, i + end.len()));
        }
        let (c, len) = match (escaped(rest), rest.chars().next()) {
            (Some(e), _) => (e, 1 + e.len_utf8()),
            (None, c) => (c?, c?.len_utf8()),
        };
        text.push(c);
        i += len;
    }
    None
}

/// Opens `kind`, or closes it when it is open: then it must be the innermost entity.
fn toggle(open: &mut Vec<(Kind, usize)>, kind: Kind, at: usize) -> Result<(), String> {
    if open.iter().any(|&(k, _)| k == kind) {
        close(open, kind)
    } else {
        open.push((kind, at));
        Ok(())
    }
}

fn close(open: &mut Vec<(Kind, usize)>, kind: Kind) -> Result<(), String> {
    match open.pop() {
        Some((k, at)) if k != kind => Err(no_end(k, at)),
        _ => Ok(()),
    }
}

/// `parse_mode=MarkdownV2`.
pub(super) fn markdown_v2(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut open: Vec<(Kind, usize)> = Vec::new();
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let rest = &s[i..];
        let in_quote = open.iter().any(|&(k, _)| k == Kind::BlockQuote);
        let line_start = i == 0 || s.as_bytes()[i - 1] == b'\n';
        // `>` starts or continues a quotation; `**>` (an empty bold, then `>`) starts a new one.
        if line_start && let Some(marker) = [">", "**>"].iter().find(|m| rest.starts_with(*m)) {
            if !in_quote {
                open.push((Kind::BlockQuote, i));
            }
            i += marker.len();
            continue;
        }
        if let Some(e) = escaped(rest) {
            out.push(e);
            i += 1 + e.len_utf8();
            continue;
        }
        let link = open
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, Kind::TextUrl | Kind::CustomEmoji));
        let len = match c {
            '\n' => {
                if in_quote && !s[i + 1..].starts_with('>') {
                    close(&mut open, Kind::BlockQuote)?;
                }
                out.push('\n');
                1
            }
            '`' => {
                let pre = rest.starts_with("```");
                let marker = if pre { "```" } else { "`" };
                let kind = if pre { Kind::Pre } else { Kind::Code };
                let (body, next) =
                    until(s, i + marker.len(), marker).ok_or_else(|| no_end(kind, i))?;
                out.push_str(if pre { pre_body(&body) } else { &body });
                next - i
            }
            '*' => toggle(&mut open, Kind::Bold, i).map(|()| 1)?,
            '_' if rest.starts_with("__") => toggle(&mut open, Kind::Underline, i).map(|()| 2)?,
            '_' => toggle(&mut open, Kind::Italic, i).map(|()| 1)?,
            '~' => toggle(&mut open, Kind::Strikethrough, i).map(|()| 1)?,
            '|' if rest.starts_with("||") => {
                let spoiler = open.iter().any(|&(k, _)| k == Kind::Spoiler);
                let line_end = matches!(s[i + 2..].chars().next(), None | Some('\n'));
                if !spoiler && line_end && open.last().is_some_and(|&(k, _)| k == Kind::BlockQuote)
                {
                    open.pop(); // the mark of an expandable quotation ends it
                } else {
                    toggle(&mut open, Kind::Spoiler, i)?;
                }
                2
            }
            '[' if link.is_none() => {
                open.push((Kind::TextUrl, i));
                1
            }
            '!' if link.is_none() && rest.starts_with("![") => {
                open.push((Kind::CustomEmoji, i));
                2
            }
            ']' => {
                let &(kind, at) = link.ok_or_else(|| reserved(']'))?;
                close(&mut open, kind)?;
                let url = rest[1..]
                    .strip_prefix('(')
                    .and_then(|_| until(s, i + 2, ")"));
                let (url, next) = url.ok_or_else(|| no_end(kind, at))?;
                if kind == Kind::CustomEmoji
                    && !url.strip_prefix("tg://emoji?id=").is_some_and(number)
                {
                    return Err("Custom emoji entity must contain a tg://emoji URL".into());
                }
                next - i
            }
            '[' | '(' | ')' | '>' | '#' | '+' | '-' | '=' | '|' | '{' | '}' | '.' | '!' => {
                return Err(reserved(c));
            }
            c => {
                out.push(c);
                c.len_utf8()
            }
        };
        i += len;
    }
    if open.last().is_some_and(|&(k, _)| k == Kind::BlockQuote) {
        open.pop();
    }
    match open.last() {
        Some(&(kind, at)) => Err(no_end(kind, at)),
        None => Ok(out),
    }
}

/// Whether `s` is a non-empty run of ASCII digits.
fn number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `parse_mode=Markdown`, the legacy mode: entities do not nest and nothing inside them is
/// markup; outside them `\` makes `_`, `*`, `` ` `` and `[` plain characters.
pub(super) fn markdown(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let rest = &s[i..];
        let unclosed = || format!("Can't find end of the entity starting at byte offset {i}");
        let end = match c {
            '\\' if rest[1..].starts_with(['_', '*', '`', '[']) => {
                out.push_str(&rest[1..2]);
                2
            }
            '[' => {
                let text_end = rest.find(']').ok_or_else(unclosed)?;
                let url = rest[text_end + 1..]
                    .strip_prefix('(')
                    .ok_or_else(unclosed)?;
                let url_end = url.find(')').ok_or_else(unclosed)?;
                out.push_str(&rest[1..text_end]);
                rest.len() - url.len() + url_end + 1
            }
            '*' | '_' | '`' => {
                let pre = rest.starts_with("```");
                let marker = if pre { "```" } else { &rest[..1] };
                let body = &rest[marker.len()..];
                let body = &body[..body.find(marker).ok_or_else(unclosed)?];
                out.push_str(if pre { pre_body(body) } else { body });
                2 * marker.len() + body.len()
            }
            c => {
                out.push(c);
                c.len_utf8()
            }
        };
        i += end;
    }
    Ok(out)
}

/// The tags `parse_mode=HTML` supports.
const TAGS: &str =
    "b strong i em u ins s strike del span tg-spoiler a code pre blockquote tg-emoji";

/// `parse_mode=HTML`. `strict` refuses a bare `>` and a `&` that starts no entity, as the
/// documentation asks; otherwise they are text, as on the live server.
pub(super) fn html(s: &str, strict: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut open: Vec<&str> = Vec::new();
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let rest = &s[i..];
        let len = match c {
            '<' if rest.starts_with("</") => {
                let end = rest
                    .find('>')
                    .ok_or_else(|| format!("Unclosed end tag at byte offset {i}"))?;
                let name = rest[2..end].trim_end().to_ascii_lowercase();
                match open.pop() {
                    Some(tag) if tag == name => end + 1,
                    Some(tag) => {
                        return Err(format!(
                            "Unmatched end tag at byte offset {i}, expected \"</{tag}>\", found \"</{name}>\""
                        ));
                    }
                    None => return Err(format!("Unexpected end tag at byte offset {i}")),
                }
            }
            '<' => {
                let (tag, len) = start_tag(rest, i)?;
                open.push(tag);
                len
            }
            '&' => match entity(rest) {
                Some((decoded, len)) => {
                    out.push(decoded);
                    len
                }
                None if strict => return Err(bare('&', i, "&amp;")),
                None => {
                    out.push('&');
                    1
                }
            },
            '>' if strict => return Err(bare('>', i, "&gt;")),
            c => {
                out.push(c);
                c.len_utf8()
            }
        };
        i += len;
    }
    match open.last() {
        Some(tag) => Err(format!(
            "Can't find end tag corresponding to start tag \"{tag}\""
        )),
        None => Ok(out),
    }
}

fn bare(c: char, at: usize, entity: &str) -> String {
    format!(
        "Character '{c}' at byte offset {at} must be written as {entity} (FakeTelegram's strict HTML check)"
    )
}

/// The start tag at the beginning of `s` (at byte offset `at` of the text): its name and
/// its length. Attributes other than the ones checked here are ignored.
fn start_tag(s: &str, at: usize) -> Result<(&'static str, usize), String> {
    let name_end = s[1..]
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .map_or(s.len(), |n| n + 1);
    let name = s[1..name_end].to_ascii_lowercase();
    let Some(tag) = TAGS.split(' ').find(|t| *t == name) else {
        return Err(format!(
            "Unsupported start tag \"{name}\" at byte offset {at}"
        ));
    };
    let unclosed = || format!("Unclosed start tag \"{tag}\" at byte offset {at}");
    let mut attributes = Vec::new();
    let mut rest = &s[name_end..];
    let end = loop {
        rest = rest.trim_start();
        if rest.starts_with('>') {
            break s.len() - rest.len() + 1;
        }
        let key_end = rest.find(|c: char| !c.is_ascii_alphanumeric() && c != '-');
        let (key, after) = rest.split_at(key_end.ok_or_else(unclosed)?);
        if key.is_empty() {
            return Err(format!(
                "Empty attribute name in the tag \"{tag}\" at byte offset {at}"
            ));
        }
        let after = after.trim_start();
        let (value, after) = match after.strip_prefix('=') {
            Some(v) => value(v.trim_start()).ok_or_else(unclosed)?,
            None => ("", after),
        };
        attributes.push((key.to_ascii_lowercase(), value));
        rest = after;
    };
    let attribute = |key: &str| attributes.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
    if tag == "span" && attribute("class") != Some("tg-spoiler") {
        return Err(format!(
            "Tag \"span\" must have class \"tg-spoiler\" at byte offset {at}"
        ));
    }
    if tag == "tg-emoji" && !attribute("emoji-id").is_some_and(number) {
        return Err("Invalid custom emoji identifier specified".into());
    }
    Ok((tag, end))
}

/// An attribute value at the start of `s`, quoted or not, and what follows it.
fn value(s: &str) -> Option<(&str, &str)> {
    match s.chars().next()? {
        quote @ ('"' | '\'') => s[1..].split_once(quote),
        _ => Some(s.split_at(s.find(|c: char| c.is_whitespace() || c == '>')?)),
    }
}

/// The character an entity (`&lt;`, `&gt;`, `&amp;`, `&quot;`, `&#…;`, `&#x…;`) at the
/// start of `s` stands for, and the entity's length.
fn entity(s: &str) -> Option<(char, usize)> {
    let end = s.find(';')?;
    let decoded = match &s[1..end] {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        name => {
            let number = name.strip_prefix('#')?;
            let (digits, radix) = match number.strip_prefix(['x', 'X']) {
                Some(hex) => (hex, 16),
                None => (number, 10),
            };
            if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
                return None;
            }
            char::from_u32(u32::from_str_radix(digits, radix).ok()?)?
        }
    };
    Some((decoded, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved_error(c: char) -> Result<String, String> {
        Err(reserved(c))
    }

    #[test]
    fn markdown_v2_entities_come_out_as_their_text() {
        let cases = [
            ("*bold \\*text*", "bold *text"),
            ("_italic \\*text_ __underline__", "italic *text underline"),
            ("~strike~ ||spoiler||", "strike spoiler"),
            (
                "*bold _italic ~strike ||spoiler||~ __underline italic___ bold*",
                "bold italic strike spoiler underline italic bold",
            ),
            ("___italic underline_**__", "italic underline"),
            ("[a link](https://example.com/a_b?c=(1\\))", "a link"),
            ("[*bold* link](tg://user?id=1) after", "bold link after"),
            ("![👍](tg://emoji?id=5368324170671202286)", "👍"),
            ("`a.b_c \\` \\\\`", "a.b_c ` \\"),
            ("```rust\nfn x() {}\n```", "fn x() {}\n"),
            ("```one line.```", "one line."),
            ("```no language\nhere```", "no language\nhere"),
            (">quoted\n>twice\nafter", "quoted\ntwice\nafter"),
            (
                ">plain\n**>expandable\n>hidden||\n>new quote",
                "plain\nexpandable\nhidden\nnew quote",
            ),
            (">*bold\n>across lines*", "bold\nacross lines"),
            (
                "🏟 \\_\\*\\[\\]\\(\\)\\~\\`\\>\\#\\+\\-\\=\\|\\{\\}\\.\\!",
                "🏟 _*[]()~`>#+-=|{}.!",
            ),
            ("\\a\\\\ and a lone \\é", "a\\ and a lone \\é"),
        ];
        for (text, plain) in cases {
            assert_eq!(markdown_v2(text).as_deref(), Ok(plain), "{text:?}");
        }
    }

    #[test]
    fn markdown_v2_refuses_reserved_characters_and_open_entities() {
        for c in "()>#+-=|{}.!]".chars() {
            assert_eq!(markdown_v2(&format!("a {c} b")), reserved_error(c), "{c}");
        }
        assert_eq!(markdown_v2("[a [b](c)](d)"), reserved_error('['));
        let cases = [
            ("*bold", "Bold", 0),
            ("🏟 _it", "Italic", 5),
            ("__u", "Underline", 0),
            ("x ~s", "Strikethrough", 2),
            ("||s", "Spoiler", 0),
            ("`a\\`", "Code", 0),
            ("```pre``", "Pre", 0),
            ("[text](url", "TextUrl", 0),
            ("[text] (url)", "TextUrl", 0),
            ("![👍](tg://emoji?id=1", "CustomEmoji", 0),
            ("*a _b* c_", "Italic", 3),
            (">_quoted\nnot_", "Italic", 1),
        ];
        for (text, kind, at) in cases {
            let expected = format!("Can't find end of {kind} entity at byte offset {at}");
            assert_eq!(markdown_v2(text), Err(expected), "{text:?}");
        }
        assert_eq!(
            markdown_v2("![x](https://example.com)"),
            Err("Custom emoji entity must contain a tg://emoji URL".into())
        );
    }

    #[test]
    fn html_tags_and_entities() {
        let cases = [
            (
                "<b>bold <i>italic <s>strike <span class=\"tg-spoiler\">spoiler</span></s> \
                 <u>under</u></i></b> <STRONG>x</STRONG><em>y</em><ins>z</ins><del>d</del>",
                "bold italic strike spoiler under xyzd",
            ),
            ("<tg-spoiler>s</tg-spoiler> <strike>t</strike>", "s t"),
            (
                "<a href='https://example.com/?a=1&amp;b=2'>link</a>",
                "link",
            ),
            ("<a href=https://example.com>bare</a>", "bare"),
            (
                "<tg-emoji emoji-id=\"5368324170671202286\">👍</tg-emoji>",
                "👍",
            ),
            ("<code>x &lt; y</code>", "x < y"),
            (
                "<pre><code class=\"language-rust\">fn x() {}</code></pre>",
                "fn x() {}",
            ),
            (
                "<blockquote expandable>q</blockquote><blockquote>r</blockquote>",
                "qr",
            ),
            ("&lt;&gt;&amp;&quot; &#65;&#x42;&#X1f44d;", "<>&\" AB👍"),
        ];
        for (text, plain) in cases {
            assert_eq!(html(text, true).as_deref(), Ok(plain), "{text:?}");
        }
    }

    #[test]
    fn html_refuses_unsupported_unbalanced_and_malformed_tags() {
        let cases = [
            ("a <br> b", "Unsupported start tag \"br\" at byte offset 2"),
            ("1 < 2", "Unsupported start tag \"\" at byte offset 2"),
            (
                "<b>bold <i>both</b></i>",
                "Unmatched end tag at byte offset 15, expected \"</i>\", found \"</b>\"",
            ),
            (
                "<b>open",
                "Can't find end tag corresponding to start tag \"b\"",
            ),
            ("🏟</b>", "Unexpected end tag at byte offset 4"),
            ("<b class=\"x", "Unclosed start tag \"b\" at byte offset 0"),
            (
                "<i =x>",
                "Empty attribute name in the tag \"i\" at byte offset 0",
            ),
            (
                "<span>s</span>",
                "Tag \"span\" must have class \"tg-spoiler\" at byte offset 0",
            ),
            (
                "<tg-emoji emoji-id=\"x\">👍</tg-emoji>",
                "Invalid custom emoji identifier specified",
            ),
        ];
        for (text, error) in cases {
            assert_eq!(html(text, false), Err(error.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn html_strictness_is_a_switch() {
        let loose = "a > b & c &nbsp; &#xD800; &#x;";
        assert_eq!(html(loose, false).as_deref(), Ok(loose));
        assert_eq!(
            html(loose, true),
            Err("Character '>' at byte offset 2 must be written as &gt; (FakeTelegram's strict HTML check)".into())
        );
        assert_eq!(
            html("a &nbsp; b", true),
            Err("Character '&' at byte offset 2 must be written as &amp; (FakeTelegram's strict HTML check)".into())
        );
        assert!(html("<x>", false).is_err());
    }

    #[test]
    fn legacy_markdown() {
        let cases = [
            (
                "*bold* _italic_ `code` [link](https://example.com/a_b)",
                "bold italic code link",
            ),
            (
                "*no _nesting_ here* a.b-c(d)!",
                "no _nesting_ here a.b-c(d)!",
            ),
            ("_snake_\\__case_ *2*\\**2=4*", "snake_case 2*2=4"),
            ("\\[not a link] \\`", "[not a link] `"),
            ("```python\nx = 1```", "x = 1"),
        ];
        for (text, plain) in cases {
            assert_eq!(markdown(text).as_deref(), Ok(plain), "{text:?}");
        }
        for (text, at) in [
            ("*2*2=4*", 6),
            ("🏟 _x", 5),
            ("[a](b", 0),
            ("[a] b", 0),
            ("a ```b`", 2),
        ] {
            let expected = format!("Can't find end of the entity starting at byte offset {at}");
            assert_eq!(markdown(text), Err(expected), "{text:?}");
        }
    }
}
