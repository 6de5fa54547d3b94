//! The error log and the access log.
//!
//! Lines have gunicorn's shape, `[2026-11-28 13:11:49 +0000] [76] [INFO] ...`,
//! and carry the pid of the process that wrote them (master or worker), which
//! is why the pid is read per line rather than once. Files are opened with
//! O_APPEND and each line is written with one write(2), so master and workers
//! can share a file without interleaving inside a line. `reopen` (USR1) makes
//! log rotation work.
//!
//! This is a small `log::Log` of our own rather than env_logger: the target has
//! to be reopened on USR1 in every process, and each line has to name the
//! process that wrote it after fork.
//!
//! `init` also replaces Rust's default panic hook, which would print its own
//! `thread '...' panicked at` lines to stderr beside ours: a panic is logged
//! once, as one error line with its message and location. A panic inside
//! [`catch_panic`] (an app's request handler) is not logged by the hook but
//! handed to the caller, who knows the request and logs one line naming it.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::panic::UnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where a log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output (the access log's `-`).
    Stdout,
    /// Standard error (the error log's `-`, and its default).
    Stderr,
    /// A file opened with O_APPEND, created if missing; reopened on USR1.
    File(PathBuf),
}

impl LogTarget {
    /// `-` means stdout (the access log's convention).
    pub fn stdout_or_file(value: &str) -> LogTarget {
        if value == "-" {
            LogTarget::Stdout
        } else {
            LogTarget::File(value.into())
        }
    }

    /// `-` means stderr (the error log's convention).
    pub fn stderr_or_file(value: &str) -> LogTarget {
        if value == "-" {
            LogTarget::Stderr
        } else {
            LogTarget::File(value.into())
        }
    }
}

/// gunicorn's levels; `critical` has no `log` crate level, so it travels as
/// an error with the target `critical` (see the `critical!` macro).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
///
/// Ordered from least to most severe; a line is written when its level is
/// at or above `--log-level`.
pub enum LogLevel {
    /// `debug`; also carries the `log` crate's trace.
    Debug,
    /// `info`, the default.
    Info,
    /// `warning` (or `warn`).
    Warning,
    /// `error`.
    Error,
    /// `critical`: worker timeouts and failures that stop the server.
    Critical,
}

impl LogLevel {
    /// `--log-level` value, any case: debug, info, warning (or warn), error
    /// or critical. None for anything else.
    pub fn parse(value: &str) -> Option<LogLevel> {
        match value.to_ascii_lowercase().as_str() {
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warning" | "warn" => Some(LogLevel::Warning),
            "error" => Some(LogLevel::Error),
            "critical" => Some(LogLevel::Critical),
            _ => None,
        }
    }

    fn of(record: &log::Metadata<'_>) -> LogLevel {
        match record.level() {
            log::Level::Error if record.target() == CRITICAL_TARGET => LogLevel::Critical,
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warning,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug | log::Level::Trace => LogLevel::Debug,
        }
    }

    fn label(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
            LogLevel::Critical => "CRITICAL",
        }
    }
}

/// The `log` target that marks an error record as CRITICAL; use the
/// `critical!` macro rather than spelling it.
pub const CRITICAL_TARGET: &str = "critical";

/// Log at gunicorn's CRITICAL level.
#[macro_export]
macro_rules! critical {
    ($($arg:tt)*) => { ::log::error!(target: $crate::logging::CRITICAL_TARGET, $($arg)*) };
}

/// An open log destination that can be reopened in place.
struct Sink {
    target: LogTarget,
    file: Option<File>,
}

impl Sink {
    fn open(target: &LogTarget) -> io::Result<Sink> {
        let file = match target {
            LogTarget::File(path) => Some(open_append(path)?),
            _ => None,
        };
        Ok(Sink {
            target: target.clone(),
            file,
        })
    }

    fn write_line(&mut self, line: &[u8]) {
        // One write per line; a full disk or closed stdout must never take
        // the server down, so errors are dropped here.
        let _ = match (&self.target, &mut self.file) {
            (_, Some(f)) => f.write_all(line),
            (LogTarget::Stdout, None) => io::stdout().lock().write_all(line),
            _ => io::stderr().lock().write_all(line),
        };
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let LogTarget::File(path) = &self.target {
            self.file = Some(open_append(path)?);
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot open log file {}: {e} (check the path and its permissions)",
                    path.display()
                ),
            )
        })
}

struct Logger {
    level: LogLevel,
    error: Mutex<Sink>,
    access: Option<Mutex<Sink>>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Called with every error or critical message (a worker copies them into
/// its heartbeat slot). Set once per process, in the worker after fork.
static ON_ERROR: OnceLock<ErrorHook> = OnceLock::new();

/// See `on_error`.
pub type ErrorHook = Box<dyn Fn(&str) + Send + Sync>;

/// Have `hook` see every error message of this process.
pub fn on_error(hook: ErrorHook) {
    let _ = ON_ERROR.set(hook);
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let level = LogLevel::of(metadata);
        // `--log-level debug` is for forkhorn's own lines: the libraries'
        // debug output (rustls prints every ClientHello whole, mio every
        // registration) would bury them. Their warnings still show.
        let is_ours = metadata.target().starts_with("forkhorn");
        level >= self.level && (is_ours || level >= LogLevel::Warning)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "[{}] [{}] [{}] {}\n",
            crate::sys::clock::local_time("%Y-%m-%d %H:%M:%S %z"),
            std::process::id(),
            LogLevel::of(record.metadata()).label(),
            record.args()
        );
        if let Ok(mut sink) = self.error.lock() {
            sink.write_line(line.as_bytes());
        }
        if let (log::Level::Error, Some(hook)) = (record.level(), ON_ERROR.get()) {
            hook(&record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// Write `text` to the error log as it is, without a prefix: what an app
/// writes to its error stream (`wsgi.errors`).
pub fn write_error_text(text: &[u8]) {
    match LOGGER.get().map(|l| l.error.lock()) {
        Some(Ok(mut sink)) => sink.write_line(text),
        _ => {
            let _ = io::stderr().lock().write_all(text);
        }
    }
}

/// The descriptor the error log writes to (stderr unless it is a file), for
/// code that must write without the logger's lock (a signal handler).
pub fn error_log_fd() -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    let Some(sink) = LOGGER.get().and_then(|l| l.error.lock().ok()) else {
        return 2;
    };
    match (&sink.target, &sink.file) {
        (_, Some(f)) => f.as_raw_fd(),
        (LogTarget::Stdout, None) => 1,
        _ => 2,
    }
}

/// Open the logs and install the logger. Called once, in the master, before fork.
pub fn init(error: &LogTarget, access: Option<&LogTarget>, level: LogLevel) -> io::Result<()> {
    let logger = Logger {
        level,
        error: Mutex::new(Sink::open(error)?),
        access: access.map(Sink::open).transpose()?.map(Mutex::new),
    };
    if LOGGER.set(logger).is_err() {
        // Already initialised (a library user calling run twice): keep the first.
        return Ok(());
    }
    if let Some(logger) = LOGGER.get() {
        let _ = log::set_logger(logger);
        log::set_max_level(log::LevelFilter::Trace);
    }
    std::panic::set_hook(Box::new(log_panic));
    Ok(())
}

// ---------------------------------------------------------------- panics

/// A panic stopped by [`catch_panic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaughtPanic {
    /// The panic message (`panic!`'s text), or `a panic` for a non-text payload.
    pub message: String,
    /// `file:line:column` of the `panic!`, when known.
    pub location: String,
}

impl std::fmt::Display for CaughtPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at {})", self.message, self.location)
    }
}

thread_local! {
    /// Whether this thread is inside `catch_panic`; only this thread writes it.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// What the hook saw of the panic `catch_panic` is about to return.
    static CAUGHT: RefCell<Option<CaughtPanic>> = const { RefCell::new(None) };
}

/// Runs `f`, turning a panic into an `Err` with its message and location;
/// the panic hook stays silent about it, so the caller's line is the only one.
pub fn catch_panic<T>(f: impl FnOnce() -> T + UnwindSafe) -> Result<T, CaughtPanic> {
    let outer = CATCHING.replace(true);
    let result = std::panic::catch_unwind(f);
    CATCHING.set(outer);
    result.map_err(|payload| {
        CAUGHT.take().unwrap_or_else(|| CaughtPanic {
            message: payload_message(&*payload),
            location: UNKNOWN_LOCATION.to_owned(),
        })
    })
}

const UNKNOWN_LOCATION: &str = "an unknown location";

fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// The panic hook: hand the panic to `catch_panic`, or log it as one error line
/// (with a backtrace when `RUST_BACKTRACE` asks for one).
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let caught = CaughtPanic {
        message: payload_message(info.payload()),
        location: info
            .location()
            .map_or_else(|| UNKNOWN_LOCATION.to_owned(), ToString::to_string),
    };
    // try_with: a panic while this thread's locals are being torn down.
    if CATCHING.try_with(Cell::get).unwrap_or(false) {
        let _ = CAUGHT.try_with(|c| c.replace(Some(caught)));
        return;
    }
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let backtrace = std::backtrace::Backtrace::capture();
    match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => {
            log::error!("panic in thread '{name}': {caught}\n{backtrace}");
        }
        _ => log::error!("panic in thread '{name}': {caught}"),
    }
}

/// Reopen log files (USR1), e.g. after logrotate moved them away.
pub fn reopen() {
    let Some(logger) = LOGGER.get() else { return };
    for sink in std::iter::once(&logger.error).chain(logger.access.as_ref()) {
        if let Ok(mut sink) = sink.lock()
            && let Err(e) = sink.reopen()
        {
            drop(sink);
            log::error!("{e}");
        }
    }
}

/// Whether an access log is configured.
pub fn access_log_enabled() -> bool {
    LOGGER.get().is_some_and(|l| l.access.is_some())
}

/// Write one access log line (`line` ends without a newline).
pub fn access(line: &str) {
    let Some(sink) = LOGGER.get().and_then(|l| l.access.as_ref()) else {
        return;
    };
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    if let Ok(mut sink) = sink.lock() {
        sink.write_line(buf.as_bytes());
    }
}
