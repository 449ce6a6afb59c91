//! Logging to stderr, journald-friendly: with `JOURNAL_STREAM` set (systemd), each line
//! starts with a `<N>` priority prefix that journald turns into the message priority.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    journal: bool,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level() && metadata.target().starts_with("pvescale")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        eprintln!(
            "{}",
            format_line(self.journal, record.level(), &record.args().to_string())
        );
    }

    fn flush(&self) {}
}

/// One log line: `<4>message` under journald, `pvescale: warning: message` elsewhere.
pub fn format_line(journal: bool, level: Level, message: &str) -> String {
    if journal {
        let priority = match level {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        };
        format!("<{priority}>{message}")
    } else {
        let word = match level {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info => "",
            Level::Debug => "debug: ",
            Level::Trace => "trace: ",
        };
        format!("pvescale: {word}{message}")
    }
}

/// Installs the logger: info by default, `-v` debug, `-vv` trace, `-q` warnings only.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::Warn,
        (false, 0) => LevelFilter::Info,
        (false, 1) => LevelFilter::Debug,
        (false, _) => LevelFilter::Trace,
    };
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    if log::set_boxed_logger(Box::new(StderrLogger { journal })).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journald_lines_carry_priorities() {
        assert_eq!(format_line(true, Level::Warn, "x"), "<4>x");
        assert_eq!(format_line(true, Level::Error, "x"), "<3>x");
        assert_eq!(format_line(false, Level::Warn, "x"), "pvescale: warning: x");
    }
}
