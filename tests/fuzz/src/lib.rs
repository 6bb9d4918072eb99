//! The properties the fuzz targets check, one function per target, shared with the seed
//! regression test (`tests/fuzz/tests/seeds.rs`): every seed and every saved crash runs through them on
//! each `cargo test`.

pub mod command_line {
    use cloudpop::protocol::command;
    use cloudpop::protocol::framing::Frame;
    use cloudpop::protocol::lines::LineBuffer;

    const MAX_LINE: usize = 64;

    /// Every frame of `input` fed in pieces of `piece` bytes: lines as owned bytes, `None` for an
    /// overlong line.
    fn frames(input: &[u8], piece: usize) -> Vec<Option<Vec<u8>>> {
        let mut buffer = LineBuffer::new(MAX_LINE);
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            buffer.append(chunk);
            loop {
                match buffer.next_line() {
                    Frame::Line(line) => {
                        assert!(line.len() < MAX_LINE, "a {}-octet line passed a {MAX_LINE}-octet limit", line.len());
                        assert!(!line.contains(&b'\n'), "LF inside a line");
                        let _ = command::parse(line);
                        out.push(Some(line.to_vec()));
                    }
                    Frame::TooLong => out.push(None),
                    Frame::NeedMore => break,
                }
            }
        }
        out
    }

    /// The framer and the command parser on arbitrary input, split at an arbitrary point: the same
    /// frames whatever the split, no line longer than the limit, no line with CR or LF in it, and
    /// the parser answers every line without panicking.
    pub fn check(data: &[u8]) {
        let Some((&split, input)) = data.split_first() else { return };
        let whole = frames(input, input.len().max(1));
        let lines = |frames: &[Option<Vec<u8>>]| frames.iter().flatten().cloned().collect::<Vec<_>>();
        // Overlong lines may be reported once per piece; the complete lines must be the same.
        assert_eq!(lines(&whole), lines(&frames(input, usize::from(split) + 1)), "splitting changed the lines");
    }
}

pub mod sasl {
    use cloudpop::auth::jwt;
    use cloudpop::protocol::sasl::{self, Presented};
    use cloudpop::protocol::scram;

    /// The SASL decoders on arbitrary client responses: never a panic; PLAIN credentials that
    /// decode hold no NUL in the user name or password (RFC 4616 separators), bearer tokens are
    /// printable and non-empty, a SCRAM user name is never empty; and no token, however made,
    /// passes the JWT check against an empty key set.
    pub fn check(data: &[u8]) {
        let _ = scram::client_first(data, data.first() == Some(&b'p'), true);
        let Ok(text) = std::str::from_utf8(data) else { return };
        let _ = sasl::decode(text);
        if let Ok(credentials) = sasl::plain(text) {
            let Presented::Password(password) = &credentials.presented else { panic!("PLAIN gave no password") };
            assert!(!credentials.user.contains('\0') && !password.contains('\0'));
        }
        for parsed in [sasl::oauthbearer(text), sasl::xoauth2(text)] {
            if let Ok(credentials) = parsed {
                let Presented::Token(token) = &credentials.presented else { panic!("no token") };
                assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()));
                assert!(!credentials.user.contains('\0'));
            }
        }
        if let Ok(first) = scram::client_first(text.as_bytes(), false, false) {
            assert!(!first.user.is_empty() && !first.user.contains('\0'));
        }
        let expect = jwt::Expectations {
            issuer: "i",
            audience: "a",
            user_claim: "sub",
            domains: &[],
            leeway: 0,
            now: 1_700_000_000,
        };
        assert!(jwt::verify(text, &[], &expect).is_err());
        if let Ok(field) = sasl::login_field(text) {
            assert!(!field.contains('\0'));
        }
    }
}

pub mod proxy_header {
    use cloudpop::protocol::proxy;

    /// The PROXY protocol parser on arbitrary bytes: a header it accepts lies within the input, and
    /// the same bytes fed with anything appended give the same header (it never reads past its
    /// end); a proper prefix of an accepted header is "need more" or an error, never another header.
    pub fn check(data: &[u8]) {
        let Ok(Some((used, source))) = proxy::parse(data) else { return };
        assert!(used > 0 && used <= data.len());
        let mut longer = data[..used].to_vec();
        longer.extend_from_slice(b"trailing bytes");
        let again = proxy::parse(&longer).expect("accepted bytes refused with more after them");
        assert_eq!(again.map(|(n, s)| (n, format!("{s:?}"))), Some((used, format!("{source:?}"))));
        for cut in 0..used {
            if let Ok(Some((n, _))) = proxy::parse(&data[..cut]) {
                panic!("a {cut}-octet prefix of a {used}-octet header parsed as a {n}-octet header");
            }
        }
    }
}

pub mod dot_stuffing {
    use cloudpop::protocol::dotstuff::{DotStuffer, TopCut};

    fn stuff(body: &[u8], piece: usize, top: Option<u64>) -> Vec<u8> {
        let mut stuffer = DotStuffer::new();
        let mut cut = top.map(TopCut::new);
        let mut out = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            let data = match &mut cut {
                Some(cut) => cut.take(chunk),
                None => chunk,
            };
            stuffer.encode(data, &mut out);
        }
        stuffer.finish(&mut out);
        out
    }

    /// The receiver's side of RFC 1939: drop the terminator, remove one leading dot per line.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("no terminator");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            assert!(line != b".\r\n", "a terminator line inside the message");
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    /// Dot-stuffing and the TOP cut on arbitrary message bytes in arbitrary pieces: the stuffed
    /// output unstuffs to exactly the input (plus a final CRLF when it lacked one), ends with the
    /// terminator and holds no other terminator line; the output does not depend on the pieces.
    pub fn check(data: &[u8]) {
        let Some((&split, body)) = data.split_first() else { return };
        // Stored messages are CRLF text; the stuffer is only promised that.
        if body.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') || body.first() == Some(&b'\n') {
            return;
        }
        let wire = stuff(body, body.len(), None);
        assert_eq!(wire, stuff(body, usize::from(split) + 1, None), "pieces changed the output");
        let mut expected = body.to_vec();
        if !expected.is_empty() && !expected.ends_with(b"\r\n") {
            expected.extend_from_slice(b"\r\n");
        }
        assert_eq!(unstuff(&wire), expected);
        let lines = u64::from(split % 8);
        assert_eq!(stuff(body, body.len(), Some(lines)), stuff(body, usize::from(split) + 1, Some(lines)));
    }
}

pub mod crlf_and_headers {
    use cloudpop::delivery::crlf::CrlfNormalizer;
    use cloudpop::delivery::headers::HeaderCheck;

    fn normalise(input: &[u8], piece: usize) -> Vec<u8> {
        let mut normalizer = CrlfNormalizer::default();
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            normalizer.push(chunk, &mut out);
        }
        normalizer.finish(&mut out);
        out
    }

    fn verdict(input: &[u8], piece: usize) -> Result<(), &'static str> {
        let mut check = HeaderCheck::default();
        for chunk in input.chunks(piece.max(1)) {
            check.push(chunk);
        }
        check.finish()
    }

    /// Line-ending normalisation and the header check on arbitrary input in arbitrary pieces: the
    /// output has only CRLF line endings and ends with one, is the same whatever the pieces, and
    /// normalising it again changes nothing; the header check's verdict does not depend on pieces.
    pub fn check(data: &[u8]) {
        let Some((&split, input)) = data.split_first() else { return };
        let piece = usize::from(split) + 1;
        let out = normalise(input, input.len());
        assert_eq!(out, normalise(input, piece));
        for (i, &b) in out.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
                b'\n' => assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {i}"),
                _ => {}
            }
        }
        assert!(input.is_empty() || out.ends_with(b"\r\n"));
        assert_eq!(normalise(&out, piece), out, "normalising twice changed the output");
        assert_eq!(verdict(input, input.len()), verdict(input, piece));
    }
}

pub mod protocol_machine {
    use cloudpop::protocol::framing::Frame;
    use cloudpop::protocol::lines::LineBuffer;
    use cloudpop::protocol::machine::{LoginOutcome, Machine, Settings, Step, UpdateOutcome};
    use cloudpop::protocol::maildrop::Listing;
    use cloudpop::protocol::sasl::Presented;
    use cloudpop::protocol::scram::StoredCredentials;

    fn settings() -> Settings {
        Settings {
            tls_active: false,
            stls_available: true,
            plaintext_allowed: true,
            scram: true,
            channel_binding: Some(b"exporter".to_vec()),
            bearer: true,
            oauth_scope: "mail".into(),
            max_auth_failures: 3,
            max_line_violations: 3,
            max_bad_commands: 20,
            implementation: "cloudpop-fuzz".into(),
            expire: "NEVER".into(),
            login_delay_secs: 0,
        }
    }

    fn listing() -> Vec<Listing> {
        (1..=2u64).map(|i| Listing { uid: format!("uid-{i}"), key: format!("key-{i}"), size: 10 * i }).collect()
    }

    /// Carries out a step the way the session would (without sockets); false when the connection
    /// would close.
    fn drive(machine: &mut Machine, mut step: Step, out: &mut Vec<u8>) -> bool {
        loop {
            step = match step {
                Step::Reply(reply) => {
                    out.extend(reply);
                    return true;
                }
                Step::Listing { header, kind } => {
                    out.extend(header);
                    let mut cursor = 0;
                    while !machine.write_listing(kind, &mut cursor, out, 7) {}
                    return true;
                }
                Step::Login(credentials) => machine.login_finished(match &credentials.presented {
                    Presented::Password(p) if p == "secret" => {
                        LoginOutcome::LoggedIn { listing: listing(), login_delay_secs: 0, expire_days: None }
                    }
                    Presented::Scram { verified: true } => {
                        LoginOutcome::LoggedIn { listing: listing(), login_delay_secs: 0, expire_days: None }
                    }
                    Presented::Token(t) if t == "secret" => {
                        LoginOutcome::LoggedIn { listing: listing(), login_delay_secs: 0, expire_days: None }
                    }
                    Presented::Password(p) if p == "locked" => LoginOutcome::InUse,
                    _ => LoginOutcome::BadCredentials,
                }),
                Step::ScramLookup { .. } => {
                    // Derived once: 4096 PBKDF2 rounds per input would slow the fuzzer down.
                    static CREDENTIALS: std::sync::OnceLock<StoredCredentials> = std::sync::OnceLock::new();
                    let credentials =
                        CREDENTIALS.get_or_init(|| StoredCredentials::derive("secret", b"fuzz-salt-16byte", 4096));
                    machine.scram_lookup_finished(Some((credentials.clone(), "srvnonce".into())))
                }
                Step::StartTls(reply) => {
                    out.extend(reply);
                    return false;
                }
                Step::Send { header, .. } => {
                    out.extend(header);
                    out.extend_from_slice(b"body\r\n.\r\n");
                    return true;
                }
                Step::Update(..) => machine.update_finished(UpdateOutcome::Applied),
                Step::AuthFailed { reply, close } => {
                    out.extend(reply);
                    return !close;
                }
                Step::Close(reply) => {
                    out.extend(reply);
                    return false;
                }
            }
        }
    }

    fn transcript(input: &[u8], piece: usize) -> Vec<u8> {
        let mut machine = Machine::new(settings());
        let mut buffer = LineBuffer::new(255);
        let mut out = machine.greeting();
        'feed: for chunk in input.chunks(piece.max(1)) {
            buffer.append(chunk);
            loop {
                let step = match buffer.next_line() {
                    Frame::Line(line) => machine.on_line(line),
                    Frame::TooLong => machine.on_line_too_long(),
                    Frame::NeedMore => break,
                };
                if !drive(&mut machine, step, &mut out) {
                    break 'feed;
                }
            }
        }
        out
    }

    /// The whole POP3 state machine driven by arbitrary client bytes in arbitrary pieces, with a
    /// stand-in for the IO it asks for (alice/secret logs in to two messages): every reply is a
    /// well-formed line or multi-line block, and the transcript does not depend on the pieces.
    pub fn check(data: &[u8]) {
        let Some((&split, input)) = data.split_first() else { return };
        let out = transcript(input, input.len());
        assert!(out.ends_with(b"\r\n"), "a reply without its CRLF");
        for line in out.split_inclusive(|&b| b == b'\n') {
            assert!(line.ends_with(b"\r\n") && !line[..line.len() - 2].contains(&b'\r'), "malformed line {line:?}");
        }
        // Overlong lines are reported once per piece, so compare only inputs without them.
        if !input.split(|&b| b == b'\n').any(|l| l.len() >= 254) {
            assert_eq!(out, transcript(input, usize::from(split) + 1), "pieces changed the transcript");
        }
    }
}

pub mod lmtp {
    use cloudpop::protocol::dotstuff::DotStuffer;
    use cloudpop::protocol::lmtp::{command, data::Unstuffer};

    /// The DATA reader over `input` in pieces of `piece` bytes: the message and where the end
    /// marker ended, if it did.
    fn read(input: &[u8], piece: usize) -> (Vec<u8>, Option<usize>) {
        let mut reader = Unstuffer::default();
        let mut out = Vec::new();
        let mut offset = 0;
        for chunk in input.chunks(piece.max(1)) {
            if let Some(n) = reader.feed(chunk, &mut out) {
                return (out, Some(offset + n));
            }
            offset += chunk.len();
        }
        (out, None)
    }

    /// Whether every CR is followed by LF and every LF preceded by CR.
    fn crlf_only(bytes: &[u8]) -> bool {
        bytes.iter().enumerate().all(|(i, &b)| match b {
            b'\r' => bytes.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && bytes[i - 1] == b'\r',
            _ => true,
        })
    }

    /// LMTP's DATA reader and command parser on arbitrary bytes in arbitrary pieces: the message
    /// and where it ends do not depend on the pieces; the data ends only just after `. CR LF`
    /// at the start or after CR LF (never after a bare LF); every line gets an answer from the
    /// command parser; and CRLF text stuffed by the POP3 side's encoder reads back exactly.
    pub fn check(data: &[u8]) {
        let Some((&split, input)) = data.split_first() else { return };
        let piece = usize::from(split) + 1;
        let whole = read(input, input.len());
        assert_eq!(whole, read(input, piece), "pieces changed the message or its end");
        if let Some(end) = whole.1 {
            assert!(input[..end].ends_with(b".\r\n"), "ended without the end marker");
            assert!(end == 3 || input[..end - 3].ends_with(b"\r\n"), "ended after a bare line ending");
            assert!(whole.0.len() + 3 <= end, "more message than input");
        }
        for line in input.split(|&b| b == b'\n') {
            let _ = command::parse(line.strip_suffix(b"\r").unwrap_or(line));
        }
        if !crlf_only(input) {
            return;
        }
        let mut wire = Vec::new();
        let mut stuffer = DotStuffer::new();
        stuffer.encode(input, &mut wire);
        stuffer.finish(&mut wire);
        let (message, end) = read(&wire, piece);
        assert_eq!(end, Some(wire.len()), "the stuffed message ended early or never");
        let mut expected = input.to_vec();
        if !expected.is_empty() && !expected.ends_with(b"\r\n") {
            expected.extend_from_slice(b"\r\n");
        }
        assert_eq!(message, expected, "stuffing and unstuffing changed the message");
    }
}

pub mod import_parsers {
    use cloudpop::accounts::schemes;
    use cloudpop::import::{maildir::UidlFormat, mbox, passwd_entries};
    use cloudpop::store::ids;

    /// The parsers of `cloudpop import` on arbitrary input: password fields, UIDL formats and
    /// passwd files never panic; an mbox split in any way gives valid, distinct UIDLs and no more
    /// message bytes than the file holds.
    pub fn check(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            if let Ok(schemes::Imported::Hash(stored)) = schemes::parse(text, true) {
                assert!(stored.starts_with('{') || stored.starts_with("$argon2"), "stored as {stored}");
            }
            let _ = UidlFormat::parse(text);
            let _ = passwd_entries(text);
        }
        let messages = mbox::split_all(data);
        let total: usize = messages.iter().map(|m| m.body.len()).sum();
        assert!(total <= data.len());
        let mut uidls: Vec<&str> = messages.iter().map(|m| m.uidl.as_str()).collect();
        assert!(uidls.iter().all(|u| ids::is_valid_uidl(u)), "{uidls:?}");
        assert!(messages.windows(2).all(|w| w[0].received_ms < w[1].received_ms));
        uidls.sort();
        uidls.dedup();
        assert_eq!(uidls.len(), messages.len(), "two messages share a UIDL");
    }
}
