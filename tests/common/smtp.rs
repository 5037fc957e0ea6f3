//! A small SMTP sink on loopback for notification tests: it speaks enough ESMTP for a client
//! (EHLO/HELO, AUTH PLAIN and LOGIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no STARTTLS), records
//! every message it accepts, or hangs (accepts the connection and never greets).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The decoded credentials of AUTH (`user\0password` for PLAIN, `user password` for LOGIN).
    pub auth: Option<String>,
    /// Headers and body, as sent (dot-stuffing removed).
    pub data: String,
}

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Accept,
    Hang,
}

pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub fn start(mode: Mode) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let seen = mails.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let seen = seen.clone();
                std::thread::spawn(move || match mode {
                    Mode::Hang => {
                        std::thread::sleep(Duration::from_secs(120));
                        drop(stream);
                    }
                    Mode::Accept => {
                        let _ = session(stream, &seen);
                    }
                });
            }
        });
        SmtpSink { port, mails }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

fn b64(text: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn session(stream: TcpStream, seen: &Mutex<Vec<Mail>>) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut mail = Mail::default();
    write!(out, "220 sink ESMTP\r\n")?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_string();
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            write!(out, "250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")?;
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            write!(out, "250 ok\r\n")?;
        } else if upper.starts_with("RSET") {
            mail = Mail::default();
            write!(out, "250 ok\r\n")?;
        } else if upper.starts_with("AUTH PLAIN") {
            let arg = line[10..].trim();
            let creds = if arg.is_empty() {
                write!(out, "334 \r\n")?;
                let mut answer = String::new();
                reader.read_line(&mut answer)?;
                b64(&answer)
            } else {
                b64(arg)
            };
            mail.auth = Some(creds.trim_start_matches('\0').to_string());
            write!(out, "235 ok\r\n")?;
        } else if upper.starts_with("AUTH LOGIN") {
            let mut parts = Vec::new();
            for prompt in ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"] {
                write!(out, "334 {prompt}\r\n")?;
                let mut answer = String::new();
                reader.read_line(&mut answer)?;
                parts.push(b64(&answer));
            }
            mail.auth = Some(parts.join(" "));
            write!(out, "235 ok\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = address(&line[10..]);
            write!(out, "250 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(address(&line[8..]));
            write!(out, "250 ok\r\n")?;
        } else if upper == "DATA" {
            write!(out, "354 go ahead\r\n")?;
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l)? == 0 {
                    return Ok(());
                }
                if l.trim_end_matches(['\r', '\n']) == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
            }
            mail.data = data;
            seen.lock().unwrap().push(std::mem::take(&mut mail));
            write!(out, "250 queued\r\n")?;
        } else if upper.starts_with("QUIT") {
            write!(out, "221 bye\r\n")?;
            return Ok(());
        } else {
            write!(out, "502 not here\r\n")?;
        }
    }
}

fn address(text: &str) -> String {
    let text = text.trim();
    let end = text.find('>').map_or(text.len(), |e| e + 1);
    text[..end]
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}
