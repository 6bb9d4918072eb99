//! The trace header fields a final delivery adds (RFC 5321 section 4.4): `Return-Path`, then
//! `Delivered-To` and `Received`, in front of the message as it arrived.

use std::fmt::Write;

/// What the `Received` field says about one transaction.
pub struct Trace<'a> {
    /// The envelope sender (`MAIL FROM`), empty for the null sender.
    pub sender: &'a str,
    /// The client's LHLO name and address.
    pub helo: &'a str,
    pub peer: std::net::IpAddr,
    /// This server's name.
    pub by: &'a str,
    pub tls: bool,
    /// The session id, so a message can be found in the logs.
    pub id: &'a str,
    pub now_secs: u64,
}

impl Trace<'_> {
    /// The fields for one recipient, CRLF-terminated. Every value was checked to be printable
    /// ASCII without spaces when its command was parsed, so nothing here can start a new field.
    pub fn header_for(&self, recipient: &str) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        let with = if self.tls { "LMTPS" } else { "LMTP" };
        let _ = write!(
            out,
            "Return-Path: <{}>\r\nDelivered-To: {recipient}\r\nReceived: from {} ([{}])\r\n\tby {} (cloudpop) with {with} \
             id {}\r\n\tfor <{recipient}>; {}\r\n",
            self.sender,
            self.helo,
            self.peer.to_canonical(),
            self.by,
            self.id,
            rfc5322_date(self.now_secs),
        );
        out.into_bytes()
    }
}

/// An RFC 5322 date-time in UTC, e.g. `Wed, 02 Dec 2026 18:40:12 +0000`.
pub fn rfc5322_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let rest = secs % 86_400;
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[month as usize - 1],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_796_236_812), "Wed, 02 Dec 2026 18:40:12 +0000");
    }

    #[test]
    fn the_header_names_sender_recipient_and_path() {
        let trace = Trace {
            sender: "",
            helo: "mx1.example.net",
            peer: "::ffff:127.0.0.1".parse().unwrap(),
            by: "pop.example.com",
            tls: false,
            id: "abc",
            now_secs: 0,
        };
        let header = String::from_utf8(trace.header_for("alice@example.com")).unwrap();
        assert_eq!(
            header,
            "Return-Path: <>\r\nDelivered-To: alice@example.com\r\nReceived: from mx1.example.net ([127.0.0.1])\r\n\
             \tby pop.example.com (cloudpop) with LMTP id abc\r\n\tfor <alice@example.com>; \
             Thu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
    }
}
