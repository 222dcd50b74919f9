//! One SMTP session of [`FakeSmtp`](super::FakeSmtp): the command loop, `AUTH PLAIN` and
//! `AUTH LOGIN`, the mail transaction and `DATA` with dot-unstuffing, and the scripted
//! refusals.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use super::{AuthAttempt, ReceivedMail, Shared, lock};

/// The name the server greets with.
const SERVER_NAME: &str = "fake-smtp.estafeta.test";
/// The largest message accepted, advertised with `SIZE`.
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// The longest command line (RFC 5321 §4.5.3.1.4 says 512; AUTH lines are allowed more).
const MAX_LINE_BYTES: u64 = 12 * 1024;

/// The reply text for a failure code the fake answers.
fn failure_text(code: u16) -> &'static str {
    match code {
        421 => "4.3.2 Service not available, closing transmission channel",
        450 => "4.2.1 Mailbox unavailable, try again later",
        451 => "4.3.0 Requested action aborted: local error in processing, try again later",
        452 => "4.3.1 Insufficient system storage",
        550 => "5.1.1 Mailbox unavailable: no such user here",
        551 => "5.1.6 User not local",
        552 => "5.3.4 Message size exceeds fixed maximum message size",
        553 => "5.1.3 Mailbox name not allowed",
        554 => "5.7.1 Transaction failed: message refused by policy",
        c if c < 500 => "4.0.0 Temporary failure, try again later",
        _ => "5.0.0 Permanent failure",
    }
}

/// Per-connection state.
struct Session {
    shared: Arc<Shared>,
    helo: Option<String>,
    user: Option<String>,
    from: Option<String>,
    recipients: Vec<String>,
}

enum Step {
    Continue,
    Close,
}

pub(super) async fn session(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut s = Session {
        shared,
        helo: None,
        user: None,
        from: None,
        recipients: Vec::new(),
    };
    if reply(
        &mut write,
        &format!("220 {SERVER_NAME} ESMTP Estafeta test server"),
    )
    .await
    .is_err()
    {
        return;
    }
    loop {
        let Some(line) = read_line(&mut reader).await else {
            return;
        };
        match s.command(&line, &mut reader, &mut write).await {
            Ok(Step::Continue) => {}
            Ok(Step::Close) | Err(_) => return,
        }
    }
}

/// One line without its line ending; `None` at end of stream, on an I/O error or for a line
/// too long to be SMTP.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> Option<String> {
    let mut buf = Vec::new();
    let n = reader
        .take(MAX_LINE_BYTES)
        .read_until(b'\n', &mut buf)
        .await
        .ok()?;
    if n == 0 || !buf.ends_with(b"\n") {
        return None;
    }
    buf.pop();
    if buf.ends_with(b"\r") {
        buf.pop();
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

async fn reply(w: &mut OwnedWriteHalf, text: &str) -> std::io::Result<()> {
    w.write_all(format!("{text}\r\n").as_bytes()).await?;
    w.flush().await
}

/// The address inside `<…>` after `prefix` (`FROM:`, `TO:`), parameters ignored.
fn path_argument(args: &str, prefix: &str) -> Option<String> {
    let rest = args.get(..prefix.len())?;
    if !rest.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = args[prefix.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_owned())
}

impl Session {
    async fn command<R: tokio::io::AsyncBufRead + Unpin>(
        &mut self,
        line: &str,
        reader: &mut R,
        w: &mut OwnedWriteHalf,
    ) -> std::io::Result<Step> {
        let (verb, args) = line.split_once(' ').unwrap_or((line, ""));
        let args = args.trim();
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if args.is_empty() => {
                reply(w, "501 5.5.4 Syntax: EHLO hostname").await?;
            }
            "EHLO" => {
                self.reset();
                self.helo = Some(args.to_owned());
                let mut lines = vec![
                    format!("{SERVER_NAME} greets {args}"),
                    "8BITMIME".to_owned(),
                    "SMTPUTF8".to_owned(),
                    "ENHANCEDSTATUSCODES".to_owned(),
                    format!("SIZE {MAX_MESSAGE_BYTES}"),
                ];
                if !self.shared.users.is_empty() {
                    lines.push("AUTH PLAIN LOGIN".to_owned());
                }
                let last = lines.len() - 1;
                let text: Vec<String> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                    .collect();
                reply(w, &text.join("\r\n")).await?;
            }
            "HELO" => {
                self.reset();
                self.helo = Some(args.to_owned());
                reply(w, &format!("250 {SERVER_NAME}")).await?;
            }
            "AUTH" => self.auth(args, reader, w).await?,
            "MAIL" => {
                let answer = if self.helo.is_none() {
                    "503 5.5.1 Error: send HELO/EHLO first"
                } else if !self.shared.users.is_empty() && self.user.is_none() {
                    "530 5.7.0 Authentication required"
                } else if self.from.is_some() {
                    "503 5.5.1 Error: nested MAIL command"
                } else if let Some(from) = path_argument(args, "FROM:") {
                    self.from = Some(from);
                    "250 2.1.0 Ok"
                } else {
                    "501 5.5.4 Syntax: MAIL FROM:<address>"
                };
                reply(w, answer).await?;
            }
            "RCPT" => {
                if self.from.is_none() {
                    reply(w, "503 5.5.1 Error: need MAIL command").await?;
                } else if let Some(to) = path_argument(args, "TO:") {
                    let refused = lock(&self.shared.book)
                        .refused_recipients
                        .get(&to.to_ascii_lowercase())
                        .copied();
                    match refused {
                        Some(code) => {
                            reply(w, &format!("{code} {} <{to}>", failure_text(code))).await?;
                        }
                        None => {
                            self.recipients.push(to);
                            reply(w, "250 2.1.5 Ok").await?;
                        }
                    }
                } else {
                    reply(w, "501 5.5.4 Syntax: RCPT TO:<address>").await?;
                }
            }
            "DATA" => return self.data(reader, w).await,
            "RSET" => {
                self.reset();
                reply(w, "250 2.0.0 Ok").await?;
            }
            "NOOP" => reply(w, "250 2.0.0 Ok").await?,
            "VRFY" => reply(w, "252 2.0.0 Cannot VRFY user, but will accept message").await?,
            "STARTTLS" => reply(w, "454 4.7.0 TLS not available").await?,
            "QUIT" => {
                reply(w, "221 2.0.0 Bye").await?;
                return Ok(Step::Close);
            }
            _ => reply(w, "500 5.5.2 Error: command not recognized").await?,
        }
        Ok(Step::Continue)
    }

    fn reset(&mut self) {
        self.from = None;
        self.recipients.clear();
    }

    async fn auth<R: tokio::io::AsyncBufRead + Unpin>(
        &mut self,
        args: &str,
        reader: &mut R,
        w: &mut OwnedWriteHalf,
    ) -> std::io::Result<()> {
        if self.shared.users.is_empty() {
            return reply(w, "503 5.5.1 Error: authentication not enabled").await;
        }
        if self.user.is_some() {
            return reply(w, "503 5.5.1 Error: already authenticated").await;
        }
        if self.from.is_some() {
            return reply(w, "503 5.5.1 Error: MAIL transaction in progress").await;
        }
        let (mechanism, initial) = args.split_once(' ').unwrap_or((args, ""));
        let mechanism = mechanism.to_ascii_uppercase();
        let decoded = |text: &str| -> Option<String> {
            String::from_utf8(STANDARD.decode(text.trim()).ok()?).ok()
        };
        let credentials = match mechanism.as_str() {
            "PLAIN" => {
                let response = if initial.is_empty() {
                    reply(w, "334 ").await?;
                    read_line(reader).await.unwrap_or_default()
                } else {
                    initial.to_owned()
                };
                if response == "*" {
                    return reply(w, "501 5.7.0 Authentication cancelled").await;
                }
                // authzid NUL authcid NUL passwd
                decoded(&response).and_then(|text| {
                    let mut fields = text.splitn(3, '\0');
                    let _authzid = fields.next()?;
                    Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
                })
            }
            "LOGIN" => {
                let user = if initial.is_empty() {
                    reply(w, &format!("334 {}", STANDARD.encode("Username:"))).await?;
                    read_line(reader).await.unwrap_or_default()
                } else {
                    initial.to_owned()
                };
                reply(w, &format!("334 {}", STANDARD.encode("Password:"))).await?;
                let password = read_line(reader).await.unwrap_or_default();
                if user == "*" || password == "*" {
                    return reply(w, "501 5.7.0 Authentication cancelled").await;
                }
                decoded(&user).zip(decoded(&password))
            }
            _ => {
                return reply(w, "504 5.5.4 Unrecognized authentication type").await;
            }
        };
        let Some((username, password)) = credentials else {
            return reply(w, "501 5.5.2 Cannot decode response").await;
        };
        let ok = self
            .shared
            .users
            .iter()
            .any(|(n, p)| *n == username && *p == password);
        lock(&self.shared.book).auth_attempts.push(AuthAttempt {
            mechanism,
            username: username.clone(),
            ok,
        });
        if ok {
            self.user = Some(username);
            reply(w, "235 2.7.0 Authentication successful").await
        } else {
            reply(w, "535 5.7.8 Error: authentication failed: bad credentials").await
        }
    }

    async fn data<R: tokio::io::AsyncBufRead + Unpin>(
        &mut self,
        reader: &mut R,
        w: &mut OwnedWriteHalf,
    ) -> std::io::Result<Step> {
        if self.from.is_none() {
            reply(w, "503 5.5.1 Error: need MAIL command").await?;
            return Ok(Step::Continue);
        }
        if self.recipients.is_empty() {
            reply(w, "554 5.5.1 Error: no valid recipients").await?;
            return Ok(Step::Continue);
        }
        reply(w, "354 End data with <CR><LF>.<CR><LF>").await?;
        let mut data = Vec::new();
        let mut too_big = false;
        loop {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line).await?;
            if n == 0 {
                return Ok(Step::Close);
            }
            if line == b".\r\n" || line == b".\n" {
                break;
            }
            // Dot-unstuffing (RFC 5321 §4.5.2): a leading `.` was doubled by the client.
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if data.len() + line.len() > MAX_MESSAGE_BYTES {
                too_big = true;
            } else {
                data.extend_from_slice(line);
            }
        }
        let from = self.from.take().unwrap_or_default();
        let recipients = std::mem::take(&mut self.recipients);
        if too_big {
            reply(w, &format!("552 {}", failure_text(552))).await?;
            return Ok(Step::Continue);
        }
        // The CRLF before the final dot belongs to the end-of-data marker (RFC 5321 §4.1.1.4).
        if data.ends_with(b"\r\n") {
            data.truncate(data.len() - 2);
        }
        let mail = ReceivedMail {
            from,
            recipients,
            data,
            auth: self.user.clone(),
            helo: self.helo.clone().unwrap_or_default(),
        };
        let fault = {
            let mut book = lock(&self.shared.book);
            let fault = book.faults.pop_front();
            if fault.is_some() {
                book.refused.push(mail.clone());
            }
            fault
        };
        if let Some(code) = fault {
            reply(w, &format!("{code} {}", failure_text(code))).await?;
            return Ok(if code == 421 {
                Step::Close
            } else {
                Step::Continue
            });
        }
        let count = {
            let mut book = lock(&self.shared.book);
            book.messages.push(mail);
            book.messages.len()
        };
        reply(w, &format!("250 2.0.0 Ok: queued as {count:08X}")).await?;
        self.shared.accepted.send_replace(count);
        Ok(Step::Continue)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::smtp::FakeSmtp;

    /// A scripted client: sends each line and reads one reply (all its lines).
    struct Client {
        reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl Client {
        async fn connect(fake: &FakeSmtp) -> (Self, String) {
            let stream = TcpStream::connect(fake.addr()).await.unwrap();
            let (r, w) = stream.into_split();
            let mut c = Self {
                reader: BufReader::new(r),
                writer: w,
            };
            let greeting = c.read_reply().await;
            (c, greeting)
        }

        async fn read_reply(&mut self) -> String {
            let mut all = String::new();
            loop {
                let line = read_line(&mut self.reader).await.unwrap();
                all.push_str(&line);
                all.push('\n');
                if line.as_bytes().get(3) != Some(&b'-') {
                    return all;
                }
            }
        }

        async fn send(&mut self, line: &str) -> String {
            self.writer
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .unwrap();
            self.read_reply().await
        }
    }

    #[tokio::test]
    async fn a_session_delivers_with_dot_unstuffing_and_scripted_failures() {
        let fake = FakeSmtp::start_with_users(&[("ana", "s3cret")]).await;
        let (mut c, greeting) = Client::connect(&fake).await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        assert!(c.send("MAIL FROM:<a@example.org>").await.starts_with("503"));
        let ehlo = c.send("EHLO client.example").await;
        assert!(ehlo.contains("250-AUTH PLAIN LOGIN") || ehlo.contains("250 AUTH PLAIN LOGIN"));
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        assert!(c.send("MAIL FROM:<a@example.org>").await.starts_with("530"));
        let bad = STANDARD.encode("\0ana\0wrong");
        assert!(
            c.send(&format!("AUTH PLAIN {bad}"))
                .await
                .starts_with("535")
        );
        assert!(c.send("AUTH LOGIN").await.starts_with("334 "));
        assert!(c.send(&STANDARD.encode("ana")).await.starts_with("334 "));
        assert!(c.send(&STANDARD.encode("s3cret")).await.starts_with("235"));
        fake.refuse_recipient("Gone@Example.org", 550);
        fake.fail_next(1, 451);
        for round in 0..2 {
            assert!(
                c.send("MAIL FROM:<a@example.org> SIZE=100")
                    .await
                    .starts_with("250")
            );
            assert!(
                c.send("RCPT TO:<gone@example.org>")
                    .await
                    .starts_with("550 5.1.1")
            );
            assert!(c.send("RCPT TO:<b@example.org>").await.starts_with("250"));
            assert!(c.send("DATA").await.starts_with("354"));
            let end = c
                .send("Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.")
                .await;
            if round == 0 {
                assert!(end.starts_with("451 4.3.0"), "{end}");
                assert!(fake.messages().is_empty());
                assert_eq!(fake.refused_messages()[0].recipients, ["b@example.org"]);
            } else {
                assert!(end.starts_with("250"), "{end}");
            }
        }
        assert!(c.send("NOOP").await.starts_with("250"));
        assert!(c.send("RSET").await.starts_with("250"));
        assert!(c.send("QUIT").await.starts_with("221"));
        assert!(fake.wait_for_messages(1, Duration::from_secs(5)).await);
        let m = &fake.messages()[0];
        assert_eq!(m.from, "a@example.org");
        assert_eq!(m.recipients, vec!["b@example.org".to_owned()]);
        assert_eq!(m.data, b"Subject: hi\r\n\r\n.leading dot\r\nbody");
        assert_eq!(m.auth.as_deref(), Some("ana"));
        assert_eq!(m.helo, "client.example");
        assert_eq!(m.parsed().header("subject").as_deref(), Some("hi"));
        let attempts = fake.auth_attempts();
        assert_eq!(attempts.len(), 2);
        assert!(!attempts[0].ok && attempts[1].ok);
        assert!(!fake.wait_for_messages(2, Duration::from_millis(50)).await);
    }

    #[tokio::test]
    async fn an_open_server_offers_no_auth_and_421_closes() {
        let fake = FakeSmtp::start().await;
        let (mut c, _) = Client::connect(&fake).await;
        let ehlo = c.send("EHLO x").await;
        assert!(!ehlo.contains("AUTH"), "{ehlo}");
        assert!(c.send("AUTH PLAIN AGFuYQBz").await.starts_with("503"));
        assert!(c.send("STARTTLS").await.starts_with("454"));
        fake.fail_next(1, 421);
        c.send("MAIL FROM:<>").await;
        c.send("RCPT TO:<b@example.org>").await;
        c.send("DATA").await;
        assert!(c.send("x\r\n.").await.starts_with("421"));
        let mut rest = Vec::new();
        c.reader.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
