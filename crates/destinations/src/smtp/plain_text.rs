//! The plain-text alternative of an HTML e-mail body: tags stripped, block elements as line
//! breaks, list items as `- `, links followed by their address, entities decoded, `script`
//! and `style` contents and comments dropped. Meant for the short HTML a route template
//! writes, not for arbitrary web pages.

/// Elements that start and end a line.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "dd",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "tr",
    "ul",
];

/// `html` as readable plain text.
pub(crate) fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    let mut in_pre = 0usize;
    let mut links: Vec<(Option<String>, usize)> = Vec::new();
    while let Some(lt) = rest.find('<') {
        push_text(&mut out, &rest[..lt], in_pre > 0);
        let after = &rest[lt..];
        if let Some(comment) = after.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let Some(gt) = tag_end(after) else {
            // A `<` that opens no tag is text.
            push_text(&mut out, "<", in_pre > 0);
            rest = &after[1..];
            continue;
        };
        let tag = &after[1..gt];
        rest = &after[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        match (name.as_str(), closing) {
            ("script" | "style" | "head" | "title", false) => {
                // Skip everything up to the matching end tag.
                let end = format!("</{name}");
                rest = find_ascii_ci(rest, &end).map_or("", |i| {
                    rest[i..].find('>').map_or("", |j| &rest[i + j + 1..])
                });
            }
            ("br", _) => out.push('\n'),
            ("li", false) => {
                line_break(&mut out);
                out.push_str("- ");
            }
            ("td" | "th", true) => out.push(' '),
            ("a", false) => links.push((attribute(tag, "href"), out.len())),
            ("a", true) => {
                if let Some((Some(href), start)) = links.pop() {
                    let text = out.get(start..).unwrap_or("").trim().to_owned();
                    let href = decode_entities(&href);
                    let shown = href.strip_prefix("mailto:").unwrap_or(&href);
                    if !href.is_empty() && !href.starts_with('#') && text != shown {
                        out.push_str(&format!(" ({shown})"));
                    }
                }
            }
            ("pre", false) => {
                in_pre += 1;
                line_break(&mut out);
            }
            ("pre", true) => {
                in_pre = in_pre.saturating_sub(1);
                line_break(&mut out);
            }
            (n, _) if BLOCKS.contains(&n) => {
                line_break(&mut out);
                // Paragraphs, headings and rules stand apart from what follows.
                if n == "p" || (n.len() == 2 && n.starts_with('h')) {
                    out.push('\n');
                }
            }
            _ => {}
        }
    }
    push_text(&mut out, rest, in_pre > 0);
    tidy(&out)
}

/// Where the tag starting at `s[0] == '<'` ends (its `>`), skipping quoted attribute values.
/// `None` when `<` does not start a tag.
fn tag_end(s: &str) -> Option<usize> {
    let next = s[1..].chars().next()?;
    if !(next.is_ascii_alphabetic() || next == '/' || next == '!') {
        return None;
    }
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

/// The value of attribute `name` inside a tag's text (`a href="…"`).
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = tag[at + name.len()..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let value = rest[1..].trim_start();
        return Some(match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or("").to_owned(),
            _ => value
                .split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or("")
                .to_owned(),
        });
    }
    None
}

fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .to_ascii_lowercase()
        .find(&needle.to_ascii_lowercase())
}

/// Appends text: entities decoded; outside `<pre>`, runs of whitespace as one space.
fn push_text(out: &mut String, text: &str, pre: bool) {
    let text = decode_entities(text);
    if pre {
        out.push_str(&text);
        return;
    }
    for c in text.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            if !out.is_empty() && !out.ends_with([' ', '\n']) {
                out.push(' ');
            }
        } else {
            out.push(if c == '\u{a0}' { ' ' } else { c });
        }
    }
}

fn line_break(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

/// Trailing spaces off every line, at most one empty line in a row, no blank start or end.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

/// Decodes the named entities HTML mail uses most and every numeric one.
fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after.find(';').filter(|&end| end <= 10).and_then(|end| {
            let name = &after[..end];
            let ch = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                "mdash" => Some('—'),
                "ndash" => Some('–'),
                "hellip" => Some('…'),
                "copy" => Some('©'),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((ch, end))
        });
        match decoded {
            Some((ch, end)) => {
                out.push(ch);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_and_keeps_the_structure() {
        let html = "<h1>Order &lt;77&gt;</h1>\n<p>Customer: <b>ACME &amp; Sons</b>,\n   total   R$&nbsp;10</p><ul><li>one</li><li>two</li></ul><p>See <a href=\"https://erp.example/os/77\">the order</a> or <a href=\"mailto:ops@example.org\">ops@example.org</a>.</p>";
        assert_eq!(
            html_to_text(html),
            "Order <77>\n\nCustomer: ACME & Sons, total R$ 10\n\n- one\n- two\n\nSee the order (https://erp.example/os/77) or ops@example.org."
        );
    }

    #[test]
    fn drops_scripts_styles_and_comments_and_keeps_pre() {
        let html = "<html><head><title>x</title><style>p { color: red }</style></head><body><!-- hidden --><script>alert('<b>')</script><p>a<br>b</p><pre>  keep\n    this</pre><table><tr><td>1</td><td>2</td></tr></table></body></html>";
        assert_eq!(html_to_text(html), "a\nb\n\n  keep\n    this\n1 2");
    }

    #[test]
    fn text_that_only_looks_like_markup_stays() {
        assert_eq!(
            html_to_text("1 < 2 and 3 > 2 & done"),
            "1 < 2 and 3 > 2 & done"
        );
        assert_eq!(
            html_to_text("&#233;t&#xE9; &unknown; &amp"),
            "été &unknown; &amp"
        );
        assert_eq!(html_to_text("<a title='x > y' href=\"#top\">up</a>"), "up");
    }
}
