//! The LMTP machine driven through the line buffer with stand-ins for the IO it asks for: the
//! same script gives the same transcript whatever the pieces the input arrives in.

use super::data::Unstuffer;
use super::*;
use crate::protocol::framing::Frame;
use crate::protocol::lines::LineBuffer;

fn settings() -> Settings {
    Settings {
        hostname: "lmtp.test".into(),
        max_size: 1000,
        starttls: true,
        quota_tempfail: false,
        rule: address::AddressRule { strip_domain: true, separators: "+".into() },
    }
}

/// Stand-ins: `alice` exists, `carol` is disabled, `full` is over quota, `down` cannot be
/// looked up; stored messages are numbered.
struct World {
    stored: Vec<(String, Vec<u8>)>,
}

impl World {
    fn look_up(&self, mailbox: &AccountName) -> Lookup {
        match mailbox.as_str() {
            "alice" | "full" => Lookup::Found(mailbox.clone()),
            "carol" => Lookup::Disabled,
            "down" => Lookup::Unavailable,
            _ => Lookup::NoSuchMailbox,
        }
    }

    fn deliver(&mut self, machine: &Machine, message: &[u8]) -> Vec<Delivered> {
        let recipients = machine.recipients().to_vec();
        recipients
            .iter()
            .map(|r| match r.mailbox.as_str() {
                "full" => Delivered::OverQuota,
                name => {
                    self.stored.push((name.to_owned(), message.to_vec()));
                    Delivered::Stored(format!("m{}", self.stored.len()))
                }
            })
            .collect()
    }
}

/// What the driver is doing with the input.
enum Reading {
    Lines,
    Data(Unstuffer, Vec<u8>),
}

/// Runs `script` fed in `chunk`-byte pieces; the transcript and what was stored.
fn run(script: &[u8], chunk: usize) -> (String, Vec<(String, Vec<u8>)>) {
    let mut machine = Machine::new(settings());
    let mut world = World { stored: Vec::new() };
    let mut buffer = LineBuffer::new(MAX_LINE);
    let mut out = machine.greeting();
    let mut reading = Reading::Lines;
    'feed: for piece in script.chunks(chunk) {
        buffer.append(piece);
        loop {
            let mut step = match &mut reading {
                Reading::Data(unstuffer, message) => {
                    let end = unstuffer.feed(buffer.unread(), message);
                    let Some(end) = end else {
                        buffer.consume(buffer.unread().len());
                        break;
                    };
                    buffer.consume(end);
                    let message = std::mem::take(message);
                    reading = Reading::Lines;
                    let outcomes = world.deliver(&machine, &message);
                    machine.delivered(&outcomes)
                }
                Reading::Lines => match buffer.next_line() {
                    Frame::Line(line) => machine.on_line(line),
                    Frame::TooLong => machine.on_line_too_long(),
                    Frame::NeedMore => break,
                },
            };
            loop {
                step = match step {
                    Step::Reply(reply) => {
                        out.extend(reply);
                        break;
                    }
                    Step::LookUp { mailbox, .. } => {
                        let found = world.look_up(&mailbox);
                        machine.recipient_found(found)
                    }
                    Step::ReceiveData(reply) => {
                        out.extend(reply);
                        reading = Reading::Data(Unstuffer::default(), Vec::new());
                        break;
                    }
                    Step::StartTls(reply) => {
                        // What follows in clear is dropped: the connection goes on in TLS.
                        out.extend(reply);
                        break 'feed;
                    }
                    Step::Close(reply) => {
                        out.extend(reply);
                        break 'feed;
                    }
                }
            }
        }
    }
    (String::from_utf8(out).unwrap(), world.stored)
}

fn transcript(script: &str) -> (String, Vec<(String, Vec<u8>)>) {
    let whole = run(script.as_bytes(), script.len());
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(run(script.as_bytes(), chunk), whole, "chunk size {chunk}");
    }
    whole
}

#[test]
fn a_transaction_answers_once_per_recipient_in_any_chunking() {
    let (out, stored) = transcript(
        "LHLO mta.test\r\nMAIL FROM:<bounce@sender.test> SIZE=100\r\nRCPT TO:<Alice+lists@example.com>\r\n\
         RCPT TO:<nobody@example.com>\r\nRCPT TO:<carol@example.com>\r\nRCPT TO:<down@example.com>\r\n\
         RCPT TO:<full@example.com>\r\nDATA\r\nSubject: hi\r\n\r\n..stuffed\r\n.\r\nQUIT\r\n",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "220 lmtp.test LMTP cloudpop ready");
    assert!(lines.contains(&"250-SIZE 1000") && lines.contains(&"250 STARTTLS"), "{out}");
    let after_lhlo: Vec<&str> = lines.iter().skip(1).skip_while(|l| l.starts_with("250")).copied().collect();
    assert_eq!(
        after_lhlo[..7],
        [
            "550 5.1.1 No such mailbox",
            "550 5.2.1 Mailbox disabled",
            "451 4.3.0 Temporary failure looking up the mailbox, try again later",
            "250 2.1.5 Recipient OK",
            "354 Send the message, ending with <CRLF>.<CRLF>",
            "250 2.0.0 <Alice+lists@example.com> Delivered as m1",
            "552 5.2.2 <full@example.com> Mailbox full",
        ]
    );
    assert_eq!(lines.last(), Some(&"221 2.0.0 Bye"));
    assert_eq!(stored, vec![("alice".to_owned(), b"Subject: hi\r\n\r\n.stuffed\r\n".to_vec())]);
}

#[test]
fn order_and_legality_are_checked_before_any_io() {
    let (out, stored) = transcript(
        "MAIL FROM:<a@b.test>\r\nEHLO x\r\nLHLO x\r\nRCPT TO:<alice@x.test>\r\nDATA\r\nMAIL FROM:<a@b.test>\r\n\
         MAIL FROM:<a@b.test>\r\nMAIL FROM:<big@b.test> SIZE=5000\r\nDATA\r\nRSET\r\nNOOP\r\nQUIT\r\n",
    );
    let codes: Vec<&str> = out.lines().filter(|l| !l.starts_with("250-")).map(|l| &l[..3]).collect();
    assert_eq!(codes, ["220", "503", "500", "250", "503", "503", "250", "503", "503", "503", "250", "250", "221"]);
    assert!(stored.is_empty());
}

#[test]
fn starttls_ends_the_cleartext_part_and_forgets_the_greeting() {
    let (out, _) = transcript("LHLO x\r\nSTARTTLS\r\nMAIL FROM:<a@b.test>\r\n");
    assert!(out.ends_with("220 2.0.0 Ready to start TLS\r\n"), "{out}");
    let mut machine = Machine::new(settings());
    machine.on_line(b"LHLO x");
    machine.on_line(b"MAIL FROM:<a@b.test>");
    assert!(matches!(machine.on_line(b"STARTTLS"), Step::StartTls(_)));
    machine.start_tls();
    assert!(
        matches!(machine.on_line(b"MAIL FROM:<a@b.test>"), Step::Reply(r) if r.starts_with(b"503 5.5.1 Send LHLO"))
    );
    let Step::Reply(lhlo) = machine.on_line(b"LHLO x") else { panic!() };
    assert!(!String::from_utf8(lhlo).unwrap().contains("STARTTLS"), "STARTTLS offered again under TLS");
    assert!(matches!(machine.on_line(b"STARTTLS"), Step::Reply(r) if r.starts_with(b"502")));
}

#[test]
fn too_many_errors_close_the_connection() {
    let script = "FROB\r\n".repeat(MAX_ERRORS as usize + 5);
    let (out, _) = transcript(&script);
    assert_eq!(out.matches("500 5.5.1").count(), MAX_ERRORS as usize + 1);
    assert!(out.ends_with("421 4.7.0 Too many errors, closing the connection\r\n"), "{out}");
}

#[test]
fn a_refused_message_gets_one_answer_per_recipient_and_ends_the_transaction() {
    let mut machine = Machine::new(settings());
    machine.on_line(b"LHLO x");
    machine.on_line(b"MAIL FROM:<a@b.test>");
    for rcpt in [&b"RCPT TO:<alice@x>"[..], b"RCPT TO:<full@x>"] {
        let Step::LookUp { mailbox, .. } = machine.on_line(rcpt) else { panic!("no lookup") };
        machine.recipient_found(Lookup::Found(mailbox));
    }
    let Step::Reply(reply) = machine.data_refused(DataRefusal::TooLarge) else { panic!() };
    assert_eq!(String::from_utf8(reply).unwrap().matches("552 5.3.4").count(), 2);
    assert!(machine.recipients().is_empty());
    assert!(matches!(machine.on_line(b"DATA"), Step::Reply(r) if r.starts_with(b"503")));
}
