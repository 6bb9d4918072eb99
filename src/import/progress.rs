//! Progress of an import on standard error: a bar redrawn in place on a terminal, a line of
//! counts every few seconds otherwise (logs, CI, `kubectl logs`).

use super::Report;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a line is written when standard error is not a terminal.
const EVERY: Duration = Duration::from_secs(5);
/// How often the bar is redrawn on a terminal.
const REDRAW: Duration = Duration::from_millis(100);

pub struct Progress {
    total: u64,
    done: u64,
    terminal: bool,
    last: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Self {
        Self { total: 0, done: 0, terminal: std::io::stderr().is_terminal(), last: Instant::now() }
    }

    /// More messages are now known to be coming.
    pub fn expect(&mut self, more: u64) {
        self.total += more;
    }

    /// One message done (whatever its outcome).
    pub fn step(&mut self, report: &Report) {
        self.done += 1;
        let due = if self.terminal { REDRAW } else { EVERY };
        if self.last.elapsed() >= due || self.done == self.total {
            self.last = Instant::now();
            self.draw(report);
        }
    }

    fn draw(&self, report: &Report) {
        let counts = format!(
            "{}/{} messages, {:.1} MB stored, {} already there, {} skipped, {} failed",
            self.done,
            self.total,
            report.octets as f64 / 1e6,
            report.already_imported,
            report.skipped.len(),
            report.failed.len()
        );
        let mut err = std::io::stderr().lock();
        if self.terminal {
            const WIDTH: u64 = 30;
            let filled = (self.done * WIDTH).checked_div(self.total).unwrap_or(0).min(WIDTH) as usize;
            let bar = format!("{}{}", "#".repeat(filled), "-".repeat(WIDTH as usize - filled));
            let _ = write!(err, "\r[{bar}] {counts}");
            if self.done == self.total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "import: {counts}");
        }
    }
}
