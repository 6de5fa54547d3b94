//! Command-line flags (gunicorn's names and meanings) and the checked `Config`
//! the rest of forkhorn runs on. Every check that can fail happens here,
//! before anything is bound or forked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::allow_list::AllowList;
use crate::forwarded::{Fields, Trust};
use crate::http::Limits;
use crate::listener::{Bind, BindSpec};
use crate::logging::{LogLevel, LogTarget};
use crate::sys::user::{self, Identity};
use crate::tls::{ClientCerts, MinVersion, Tls, TlsFiles};

/// gunicorn's default access log format.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// forkhorn: a prefork HTTP/1.1 server and process supervisor.
///
/// A master process binds the sockets and forks sync workers; it replaces
/// workers that hang (--timeout), recycles them (--max-requests) and stops or
/// reloads gracefully on signals (TERM, HUP, ...), like gunicorn.
///
/// `forkhorn ctl --help` shows the client for a running server's control socket.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "forkhorn",
    version,
    allow_negative_numbers = true,
    args_override_self = true
)]
pub struct Args {
    /// The app to serve: module:callable (a Python WSGI app, e.g. app:app), or built in: chat (a chat web UI), hello, echo, chaos, static:DIR, chat:URL (an OpenAI-compatible upstream).
    #[arg(value_name = "APP", default_value = "chat")]
    pub app: String,

    /// Read settings from this TOML file (keys are the long flag names with `_`).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration (flags, file, binds, tmp dir) and exit: 0 if usable, 1 if not.
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// Print the resolved configuration as TOML that -c accepts, and exit.
    #[arg(long = "print-config")]
    pub print_config: bool,

    /// Address to listen on: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N;
    /// https://ADDR for TLS, proxy+http://ADDR or proxy+https://ADDR for a
    /// PROXY protocol header first. Repeat for several listeners. Port 0
    /// picks a free port.
    #[arg(short = 'b', long = "bind", value_name = "ADDR")]
    pub bind: Vec<String>,

    /// Number of worker processes [default: $WEB_CONCURRENCY, else the number of CPUs].
    #[arg(short = 'w', long, value_name = "N", env = "WEB_CONCURRENCY", value_parser = workers)]
    pub workers: Option<usize>,

    /// Worker class; only `sync` exists (accepted so gunicorn command lines carry over).
    #[arg(
        short = 'k',
        long = "worker-class",
        value_name = "CLASS",
        default_value = "sync"
    )]
    pub worker_class: String,

    /// Request threads per worker; only 1 exists (accepted so gunicorn command lines carry over).
    #[arg(long, value_name = "N", default_value = "1", value_parser = count::<usize>("--threads"))]
    pub threads: usize,

    /// Seconds a worker may go without a heartbeat before it is killed and replaced (0 = never).
    #[arg(short = 't', long, value_name = "SECS", default_value = "30", value_parser = seconds("--timeout"))]
    pub timeout: Duration,

    /// Seconds workers get to finish their requests on stop or reload before they are killed.
    #[arg(long = "graceful-timeout", value_name = "SECS", default_value = "30", value_parser = seconds("--graceful-timeout"))]
    pub graceful_timeout: Duration,

    /// Seconds an idle keep-alive connection stays open (0 = no keep-alive).
    #[arg(long = "keep-alive", value_name = "SECS", default_value = "5", value_parser = seconds("--keep-alive"))]
    pub keep_alive: Duration,

    /// Requests a worker serves before it is recycled (0 = never).
    #[arg(long = "max-requests", value_name = "N", default_value = "0", value_parser = count::<u64>("--max-requests"))]
    pub max_requests: u64,

    /// Each worker's limit is drawn from max-requests ..= max-requests + jitter.
    #[arg(long = "max-requests-jitter", value_name = "N", default_value = "0", value_parser = count::<u64>("--max-requests-jitter"))]
    pub max_requests_jitter: u64,

    /// Directory for the workers' heartbeat files [default: /dev/shm if writable, else the system temp dir].
    #[arg(long = "worker-tmp-dir", value_name = "DIR")]
    pub worker_tmp_dir: Option<PathBuf>,

    /// Maximum number of pending connections per listener.
    #[arg(long, value_name = "N", default_value = "2048", value_parser = backlog)]
    pub backlog: i32,

    /// Write the master's pid to FILE (removed on exit).
    #[arg(short = 'p', long = "pid", value_name = "FILE")]
    pub pid: Option<PathBuf>,

    /// Access log file ('-' = stdout); off unless given.
    #[arg(long = "access-logfile", value_name = "FILE")]
    pub access_logfile: Option<String>,

    /// Access log format, with gunicorn's atoms (%(h)s, %(r)s, %(s)s, %(D)s, %({header}i)s, ...).
    #[arg(long = "access-logformat", value_name = "FORMAT", default_value = DEFAULT_ACCESS_LOG_FORMAT)]
    pub access_logformat: String,

    /// Error log file ('-' = stderr).
    #[arg(long = "error-logfile", value_name = "FILE", default_value = "-")]
    pub error_logfile: String,

    /// Error log level: debug, info, warning, error or critical.
    #[arg(long = "log-level", value_name = "LEVEL", default_value = "info", value_parser = log_level)]
    pub log_level: LogLevel,

    /// Longest request line in bytes (0 = unlimited); longer gets 414.
    #[arg(
        long = "limit-request-line",
        value_name = "BYTES",
        default_value = "4094",
        value_parser = count::<usize>("--limit-request-line"),
    )]
    pub limit_request_line: usize,

    /// Most header fields in a request; more gets 431.
    #[arg(long = "limit-request-fields", value_name = "N", default_value = "100", value_parser = count::<usize>("--limit-request-fields"))]
    pub limit_request_fields: usize,

    /// Longest header field in bytes (0 = unlimited); longer gets 431.
    #[arg(
        long = "limit-request-field_size",
        alias = "limit-request-field-size",
        value_name = "BYTES",
        default_value = "8190",
        value_parser = count::<usize>("--limit-request-field_size"),
    )]
    pub limit_request_field_size: usize,

    /// Largest request body in bytes (0 = unlimited); larger gets 413.
    #[arg(
        long = "limit-request-body",
        value_name = "BYTES",
        default_value = "1073741824",
        value_parser = count::<u64>("--limit-request-body"),
    )]
    pub limit_request_body: u64,

    /// Open connections per worker; beyond it a worker stops accepting until one closes.
    #[arg(long = "worker-connections", value_name = "N", default_value = "1000", value_parser = worker_connections)]
    pub worker_connections: usize,

    /// Seconds a client gets to send a whole request head; then 408 and close.
    #[arg(long = "header-timeout", value_name = "SECS", default_value = "10", value_parser = header_timeout)]
    pub header_timeout: Duration,

    /// Accept HTTP/1.1 requests without a Host header (RFC 9112 requires 400; old clients and gunicorn's corpus leave it out).
    #[arg(long = "permit-missing-host")]
    pub permit_missing_host: bool,

    /// Accept Transfer-Encoding codings such as gzip before a final chunked; the app gets the bytes still coded (default: 501).
    #[arg(long = "permit-transfer-codings")]
    pub permit_transfer_codings: bool,

    /// Let static:DIR serve dotfiles and dot-directories (.git, .env); by default they are 404.
    #[arg(long = "static-dotfiles")]
    pub static_dotfiles: bool,

    /// Change to this directory before loading the app; a Python app's modules are found there.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Directories to put first on a Python app's sys.path, comma-separated.
    #[arg(long, value_name = "DIRS", value_delimiter = ',')]
    pub pythonpath: Vec<PathBuf>,

    /// Import a Python app in the master before forking, so workers share its memory (code changes then need USR2, not HUP).
    #[arg(long)]
    pub preload: bool,

    /// Set an environment variable for the app: KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = env_var)]
    pub env: Vec<(String, String)>,

    /// Unix socket for `forkhorn ctl` [default: forkhorn.ctl in $XDG_RUNTIME_DIR, else in the worker tmp dir].
    #[arg(long = "control-socket", value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// Do not open the control socket.
    #[arg(long = "no-control-socket", conflicts_with = "control_socket")]
    pub no_control_socket: bool,

    /// Serve Prometheus /metrics and a /healthz readiness probe from the master at HOST:PORT (off by default).
    #[arg(long = "metrics-bind", value_name = "ADDR")]
    pub metrics_bind: Option<String>,

    /// Replace a worker whose private memory exceeds this many MiB (after its current request).
    #[arg(long = "max-worker-memory", value_name = "MB", value_parser = max_worker_memory)]
    pub max_worker_memory: Option<u64>,

    /// Seconds between the master's checks of worker memory.
    #[arg(
        long = "memory-check-interval",
        value_name = "SECS",
        default_value = "5",
        value_parser = memory_check_interval,
    )]
    pub memory_check_interval: Duration,

    /// Log a warning for every request slower than this many seconds (off by default).
    #[arg(long = "slow-request-threshold", value_name = "SECS", value_parser = seconds("--slow-request-threshold"))]
    pub slow_request_threshold: Option<Duration>,

    /// A worker must stay up this long after reporting ready to clear the failed-boot count.
    #[arg(long = "min-worker-lifetime", value_name = "SECS", default_value = "1", value_parser = seconds("--min-worker-lifetime"))]
    pub min_worker_lifetime: Duration,

    /// Stop the server (exit 3) after this many workers in a row die before reporting ready (0 = retry forever).
    #[arg(long = "max-boot-failures", value_name = "N", default_value = "10", value_parser = count::<u32>("--max-boot-failures"))]
    pub max_boot_failures: u32,

    /// Detached response streams (Server-Sent Events fed by app threads) one worker pumps at once; more get 503.
    #[arg(
        long = "max-streams-per-worker",
        value_name = "N",
        default_value = "100",
        value_parser = count::<usize>("--max-streams-per-worker"),
    )]
    pub max_streams_per_worker: usize,

    /// TLS certificate chain (PEM) for https:// binds; with no https:// bind, every bind is TLS.
    /// Repeat, each with its --keyfile, for several names (chosen by SNI; the first is the default).
    #[arg(long = "certfile", value_name = "FILE")]
    pub certfile: Vec<PathBuf>,

    /// Private key (PEM) of the --certfile in the same position.
    #[arg(long = "keyfile", value_name = "FILE")]
    pub keyfile: Vec<PathBuf>,

    /// CA certificates (PEM) that sign client certificates (for --cert-reqs 1 or 2).
    #[arg(long = "ca-certs", value_name = "FILE")]
    pub ca_certs: Option<PathBuf>,

    /// Client certificates: 0 not asked for, 1 optional, 2 required.
    #[arg(long = "cert-reqs", value_name = "N", default_value = "0", value_parser = cert_reqs)]
    pub cert_reqs: ClientCerts,

    /// Oldest TLS version served: 1.2 or 1.3.
    #[arg(long = "tls-min-version", value_name = "VERSION", default_value = "1.2", value_parser = tls_min_version)]
    pub tls_min_version: MinVersion,

    /// Expect a PROXY protocol header (v1 or v2) on every bind (one bind: -b proxy+http://ADDR).
    #[arg(long = "proxy-protocol")]
    pub proxy_protocol: bool,

    /// Addresses and networks (CIDR) allowed to send PROXY headers, comma-separated; * for any.
    #[arg(long = "proxy-allow-from", value_name = "ADDRS", default_value = "127.0.0.1", value_parser = allow_list("--proxy-allow-from"))]
    pub proxy_allow_from: AllowList,

    /// Addresses and networks (CIDR) whose X-Forwarded-For/-Proto and Forwarded headers are believed; * for any.
    #[arg(
        long = "forwarded-allow-ips",
        value_name = "ADDRS",
        env = "FORWARDED_ALLOW_IPS",
        default_value = "127.0.0.1,::1",
        value_parser = allow_list("--forwarded-allow-ips")
    )]
    pub forwarded_allow_ips: AllowList,

    /// The header the proxy in front writes, the only one read: X-Forwarded-For (with X-Forwarded-Proto) or Forwarded.
    #[arg(long = "forwarded-header", value_name = "NAME", default_value = "X-Forwarded-For", value_parser = Fields::parse)]
    pub forwarded_header: Fields,

    /// Run workers as this user (name or uid); the master binds first, so low ports work.
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,

    /// Run workers with this group (name or gid) [default: the user's group].
    #[arg(short = 'g', long, value_name = "GROUP")]
    pub group: Option<String>,

    /// File mode mask for files forkhorn creates (octal, e.g. 0o022 or 022).
    #[arg(short = 'm', long, value_name = "MASK", value_parser = umask)]
    pub umask: Option<u32>,

    /// Give workers the user's supplementary groups (from /etc/group).
    #[arg(long)]
    pub initgroups: bool,
}

/// A flag in seconds that a program sets with a `Duration`
/// ([`crate::Server::builder`]) rather than with words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondsFlag {
    /// `--timeout`.
    Timeout,
    /// `--graceful-timeout`.
    GracefulTimeout,
    /// `--keep-alive`.
    KeepAlive,
}

impl SecondsFlag {
    /// The flag's long name, without dashes.
    pub fn long(self) -> &'static str {
        match self {
            SecondsFlag::Timeout => "timeout",
            SecondsFlag::GracefulTimeout => "graceful-timeout",
            SecondsFlag::KeepAlive => "keep-alive",
        }
    }
}

impl Args {
    /// Set a flag in seconds to `d` as it is, with the flag's own range
    /// check (its value parser's, and its message).
    pub fn set_seconds(&mut self, flag: SecondsFlag, d: Duration) -> Result<(), String> {
        let name = format!("--{}", flag.long());
        let field = match flag {
            SecondsFlag::Timeout => &mut self.timeout,
            SecondsFlag::GracefulTimeout => &mut self.graceful_timeout,
            SecondsFlag::KeepAlive => &mut self.keep_alive,
        };
        if d.as_secs_f64() >= MAX_SECONDS {
            return Err(format!(
                "{name} {}: must be a number of seconds, 0 or more",
                d.as_secs_f64()
            ));
        }
        *field = d;
        Ok(())
    }
}

/// The checked configuration, split by who holds each setting.
#[derive(Debug, Clone)]
pub struct Config {
    /// What the master set up at start and holds for its whole life: a
    /// reload cannot change it (a restart or a USR2 upgrade can).
    pub master: MasterSettings,
    /// How workers are run: a reload (HUP) applies it to the next generation.
    pub worker: WorkerSettings,
}

/// Settings the master acts on once, at start (sockets bound, files opened,
/// the process mask set, the app factory built). A reload that changes one
/// logs a warning naming it (`MasterSettings::changed`).
#[derive(Debug, Clone, PartialEq)]
pub struct MasterSettings {
    /// App spec, e.g. `hello` (checked against the built-in apps by
    /// `apps::build`); the built-in app factory is made from it at start.
    pub app: String,
    /// `static:DIR` serves names starting with `.` (`--static-dotfiles`;
    /// default off: 404); part of the app factory, like `app`.
    pub static_dotfiles: bool,
    /// Listeners, in the order given.
    pub binds: Vec<Bind>,
    /// listen(2) backlog, given when the listeners are bound.
    pub backlog: i32,
    /// File mode mask the master sets at start-up, so workers inherit it
    /// (`--umask`); None = keep the one forkhorn was started with.
    pub umask: Option<u32>,
    /// Where heartbeat files and the balance table are created (and at once
    /// unlinked).
    pub worker_tmp_dir: PathBuf,
    /// Pidfile of the master, if any.
    pub pidfile: Option<PathBuf>,
    /// Where the master listens for `forkhorn ctl`; None = off.
    pub control_socket: Option<PathBuf>,
    /// The user named the control socket's path (`--control-socket`). Then
    /// another forkhorn already there stops this one; at the default path it
    /// only costs this one its control socket.
    pub is_control_socket_named: bool,
    /// Where the master serves /metrics and /healthz; None = off.
    pub metrics_bind: Option<BindSpec>,
    /// Access log, if on (opened by the master; workers inherit it).
    pub access_log: Option<LogTarget>,
    /// `--error-logfile`; default stderr.
    pub error_log: LogTarget,
    /// Least severe level written (`--log-level`); default info.
    pub log_level: LogLevel,
    /// Directory the master changes to before the app is built (`--chdir`).
    pub chdir: Option<PathBuf>,
    /// `sys.path` additions for a Python app (`--pythonpath`), captured by
    /// the app factory.
    pub pythonpath: Vec<PathBuf>,
    /// Environment the master sets before the app is built, so every
    /// worker inherits it (`--env`).
    pub env: Vec<(String, String)>,
    /// Import a Python app in the master, before fork (`--preload`).
    pub preload: bool,
}

impl MasterSettings {
    /// The settings (by their file key) that differ in `new`.
    pub fn changed(&self, new: &MasterSettings) -> Vec<&'static str> {
        // Destructured, so a field added to the struct must be listed here.
        let MasterSettings {
            app,
            static_dotfiles,
            binds,
            backlog,
            umask,
            worker_tmp_dir,
            pidfile,
            control_socket,
            is_control_socket_named,
            metrics_bind,
            access_log,
            error_log,
            log_level,
            chdir,
            pythonpath,
            env,
            preload,
        } = self;
        let mut changed = Vec::new();
        let mut note = |differs: bool, key: &'static str| {
            if differs {
                changed.push(key);
            }
        };
        note(*app != new.app, "app");
        note(*static_dotfiles != new.static_dotfiles, "static_dotfiles");
        note(*binds != new.binds, "bind");
        note(*backlog != new.backlog, "backlog");
        note(*umask != new.umask, "umask");
        note(*worker_tmp_dir != new.worker_tmp_dir, "worker_tmp_dir");
        note(*pidfile != new.pidfile, "pid");
        note(
            (control_socket, is_control_socket_named)
                != (&new.control_socket, &new.is_control_socket_named),
            "control_socket",
        );
        note(*metrics_bind != new.metrics_bind, "metrics_bind");
        note(*access_log != new.access_log, "access_logfile");
        note(*error_log != new.error_log, "error_logfile");
        note(*log_level != new.log_level, "log_level");
        note(*chdir != new.chdir, "chdir");
        note(*pythonpath != new.pythonpath, "pythonpath");
        note(*env != new.env, "env");
        note(*preload != new.preload, "preload");
        changed
    }
}

/// Settings for running workers: how many, their limits and timeouts, who
/// they run as. The master applies a reload's values to the workers it forks
/// from then on, and to its own checks of them.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Worker processes to keep running (at least 1).
    pub workers: usize,
    /// Heartbeat silence after which a worker is killed; None = never.
    pub timeout: Option<Duration>,
    /// Time workers get to finish on a graceful stop or reload.
    pub graceful_timeout: Duration,
    /// Idle keep-alive time; None = close after every response.
    pub keep_alive: Option<Duration>,
    /// Requests before recycling; 0 = never.
    pub max_requests: u64,
    /// Extra requests each worker may draw on top of max_requests.
    pub max_requests_jitter: u64,
    /// `--access-logformat`, already known to parse (workers parse it again
    /// after fork); default [`DEFAULT_ACCESS_LOG_FORMAT`].
    pub access_log_format: String,
    /// Head size limits.
    pub limits: Limits,
    /// Largest request body; None = unlimited.
    pub limit_request_body: Option<u64>,
    /// Open connections per worker.
    pub worker_connections: usize,
    /// Time a client gets to send a whole head.
    pub header_timeout: Duration,
    /// Private memory above which a worker is replaced; None = no limit.
    pub max_worker_memory: Option<u64>,
    /// How often the master reads worker memory (`--memory-check-interval`,
    /// default 5s, at least 10ms).
    pub memory_check_interval: Duration,
    /// Requests slower than this are logged; None = off.
    pub slow_request_threshold: Option<Duration>,
    /// How long a ready worker must stay up to clear the failed-boot count.
    pub min_worker_lifetime: Duration,
    /// Failed boots in a row before the master gives up; None = never.
    pub max_boot_failures: Option<u32>,
    /// Detached streams one worker pumps at once.
    pub max_streams_per_worker: usize,
    /// Who workers run as; None = the master's own user. Workers drop to it
    /// after fork, so a reload's new user applies to the next generation.
    pub worker_identity: Option<Identity>,
    /// With `worker_identity`, also give workers the user's supplementary
    /// groups (`--initgroups`; default off: the one group only).
    pub initgroups: bool,
    /// Certificates and keys for the TLS binds, read by the master (at
    /// start, and again on HUP); None when no bind is TLS.
    pub tls: Option<Tls>,
    /// Peers allowed to send a PROXY header (`--proxy-allow-from`; default
    /// 127.0.0.1); on a PROXY bind, others are closed at once.
    pub proxy_allow_from: AllowList,
    /// Peers whose forwarded headers are believed (`--forwarded-allow-ips`;
    /// default 127.0.0.1 and ::1), and which headers (`--forwarded-header`;
    /// default X-Forwarded-For).
    pub forwarded: Trust,
}

/// A bad flag or value, with the fix.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

macro_rules! bail {
    ($($arg:tt)*) => { return Err(ConfigError(format!($($arg)*))) };
}

/// A clap error as one line: what is wrong, then clap's own suggestions
/// ("a similar argument exists: '--workers'"), without the usage block.
/// The caller adds where to look for help, once.
pub fn usage_error_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let what = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    // "to pass '--x' as a value, use '-- --x'" never helps here: no APP
    // starts with a dash.
    let tips = lines
        .filter_map(|l| l.strip_prefix("tip: "))
        .filter(|tip| !tip.starts_with("to pass "));
    std::iter::once(what)
        .chain(tips)
        .collect::<Vec<_>>()
        .join("; ")
}

// Value parsers for the flags: each turns one word into its type, with the
// message forkhorn gives for a bad value. The message starts with the flag,
// so `config_file` can point it at the file line or variable it came from.

/// The message of a value parser's refusal (e.g. `--workers 0: at least one
/// worker is needed`), without clap's wrapping; None for other errors.
pub fn value_error(e: &clap::Error) -> Option<String> {
    use std::error::Error;
    if e.kind() != clap::error::ErrorKind::ValueValidation {
        return None;
    }
    e.source().map(|s| s.to_string())
}

/// The most seconds a flag takes: later than this, an `Instant` may overflow.
const MAX_SECONDS: f64 = 1e9;

/// Non-negative seconds, whole or decimal.
fn parse_seconds(flag: &str, value: &str) -> Result<Duration, String> {
    match value.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..MAX_SECONDS).contains(&s) => Ok(Duration::from_secs_f64(s)),
        Ok(_) => Err(format!(
            "{flag} {value}: must be a number of seconds, 0 or more"
        )),
        Err(_) => Err(format!(
            "{flag} {value:?}: not a number of seconds (e.g. {flag} 30)"
        )),
    }
}

/// A whole number, 0 or more.
fn parse_count<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    match value.trim().parse::<T>() {
        Ok(n) => Ok(n),
        Err(_) if value.trim().starts_with('-') => {
            Err(format!("{flag} {value}: must not be negative"))
        }
        Err(_) => Err(format!("{flag} {value:?}: not a whole number")),
    }
}

/// The value parser for a flag in seconds.
fn seconds(
    flag: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |value| parse_seconds(flag, value)
}

/// The value parser for a flag that counts something.
fn count<T: std::str::FromStr>(
    flag: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |value| parse_count(flag, value)
}

fn workers(value: &str) -> Result<usize, String> {
    // Where the value came from (flag, file or WEB_CONCURRENCY) is added by
    // `config_file::load`, which knows.
    match parse_count("--workers", value)? {
        0 => Err("--workers 0: at least one worker is needed".to_owned()),
        n => Ok(n),
    }
}

fn backlog(value: &str) -> Result<i32, String> {
    match parse_count("--backlog", value)? {
        n if n < 1 => Err(format!("--backlog {n}: must be at least 1")),
        n => Ok(n),
    }
}

fn log_level(value: &str) -> Result<LogLevel, String> {
    LogLevel::parse(value).ok_or_else(|| {
        format!("--log-level {value}: use one of debug, info, warning, error, critical")
    })
}

fn worker_connections(value: &str) -> Result<usize, String> {
    match parse_count("--worker-connections", value)? {
        0 => Err("--worker-connections 0: a worker needs at least one connection".to_owned()),
        n => Ok(n),
    }
}

fn header_timeout(value: &str) -> Result<Duration, String> {
    match parse_seconds("--header-timeout", value)? {
        d if d.is_zero() => {
            Err("--header-timeout 0: clients need some time to send a request head".to_owned())
        }
        d => Ok(d),
    }
}

fn memory_check_interval(value: &str) -> Result<Duration, String> {
    match parse_seconds("--memory-check-interval", value)? {
        d if d < Duration::from_millis(10) => Err(format!(
            "--memory-check-interval {value}: must be at least 0.01 seconds"
        )),
        d => Ok(d),
    }
}

/// MiB, as given (`Config` holds bytes).
fn max_worker_memory(value: &str) -> Result<u64, String> {
    match parse_count("--max-worker-memory", value)? {
        0 => Err(
            "--max-worker-memory 0: give a limit in MiB, or leave the flag out for none".to_owned(),
        ),
        mb => Ok(mb),
    }
}

/// `--env KEY=VALUE`.
fn env_var(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, v)) if !key.is_empty() && !key.contains('\0') && !v.contains('\0') => {
            Ok((key.to_owned(), v.to_owned()))
        }
        _ => Err(format!(
            "{value:?} is not KEY=VALUE (an environment variable with its value, e.g. DJANGO_SETTINGS_MODULE=site.settings)"
        )),
    }
}

fn umask(value: &str) -> Result<u32, String> {
    let digits = value.trim_start_matches("0o").trim_start_matches("0O");
    match u32::from_str_radix(if digits.is_empty() { "0" } else { digits }, 8) {
        Ok(v) if v <= 0o777 => Ok(v),
        _ => Err(format!(
            "--umask {value}: give an octal mask from 0 to 0777, e.g. 022"
        )),
    }
}

/// The value parser for a list of trusted addresses.
fn allow_list(
    flag: &'static str,
) -> impl Fn(&str) -> Result<AllowList, String> + Clone + Send + Sync + 'static {
    move |value| AllowList::parse(flag, value)
}

fn cert_reqs(value: &str) -> Result<ClientCerts, String> {
    match value.trim() {
        "0" => Ok(ClientCerts::None),
        "1" => Ok(ClientCerts::Optional),
        "2" => Ok(ClientCerts::Required),
        _ => Err(format!(
            "--cert-reqs {value}: use 0 (no client certificate), 1 (optional) or 2 (required)"
        )),
    }
}

fn tls_min_version(value: &str) -> Result<MinVersion, String> {
    match value
        .trim()
        .trim_start_matches("TLSv")
        .trim_start_matches("tls")
    {
        "1.2" => Ok(MinVersion::Tls12),
        "1.3" => Ok(MinVersion::Tls13),
        _ => Err(format!(
            "--tls-min-version {value}: use 1.2 or 1.3 (older versions are not offered)"
        )),
    }
}

/// The TLS settings, if any bind is TLS: the binds marked `https://`, or
/// every bind when `--certfile` is given and none is marked (as gunicorn
/// does). The files are read and checked here.
fn tls_settings(args: &Args, binds: &mut [Bind]) -> Result<Option<Tls>, ConfigError> {
    if args.certfile.len() != args.keyfile.len() {
        bail!(
            "--certfile and --keyfile come in pairs: {} certificate(s) and {} key(s) given; give one --keyfile per --certfile, in the same order",
            args.certfile.len(),
            args.keyfile.len()
        );
    }
    if !args.certfile.is_empty() && !binds.iter().any(|b| b.is_tls) {
        binds.iter_mut().for_each(|b| b.is_tls = true);
    }
    if !binds.iter().any(|b| b.is_tls) {
        if args.ca_certs.is_some() || args.cert_reqs != ClientCerts::None {
            bail!(
                "--ca-certs and --cert-reqs ask TLS clients for certificates, but no bind is TLS; give --certfile and --keyfile (and an https:// bind)"
            );
        }
        return Ok(None);
    }
    if args.certfile.is_empty() {
        bail!(
            "--bind https://...: TLS needs a certificate; give --certfile FILE and --keyfile FILE"
        );
    }
    let files = TlsFiles {
        pairs: args
            .certfile
            .iter()
            .cloned()
            .zip(args.keyfile.iter().cloned())
            .collect(),
        ca_certs: args.ca_certs.clone(),
        client_certs: args.cert_reqs,
        min_version: args.tls_min_version,
    };
    Tls::load(files).map(Some).map_err(ConfigError)
}

fn zero_is_none(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl Config {
    /// Check every flag and build the config. Nothing is bound here; the
    /// files opened are a probe file in the worker tmp dir and the TLS
    /// certificates and keys, which are read and checked (`tls::Tls::load`).
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        if args.worker_class != "sync" {
            bail!(
                "--worker-class {}: forkhorn has only the sync worker class; drop the flag or pass -k sync",
                args.worker_class
            );
        }
        if args.threads > 1 {
            bail!(
                "--threads {}: forkhorn has no threaded worker yet; each worker serves one request at a time. \
                 Run more workers (-w) instead: idle keep-alive connections move to a free worker, and \
                 streamed responses (text/event-stream) do not hold one",
                args.threads
            );
        }
        let workers = args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let binds = if args.bind.is_empty() {
            // PaaS convention (Heroku, Cloud Run): $PORT on all interfaces.
            let default = match std::env::var("PORT") {
                Ok(port) if !port.is_empty() => format!("0.0.0.0:{port}"),
                _ => "127.0.0.1:8000".to_owned(),
            };
            vec![Bind::parse(&default).map_err(|e| ConfigError(format!("{e} (from $PORT)")))?]
        } else {
            args.bind
                .iter()
                .map(|b| Bind::parse(b).map_err(ConfigError))
                .collect::<Result<Vec<_>, _>>()?
        };
        let mut binds = binds;
        if args.proxy_protocol {
            binds.iter_mut().for_each(|b| b.expects_proxy_header = true);
        }
        let tls = tls_settings(args, &mut binds)?;
        let worker_tmp_dir = match &args.worker_tmp_dir {
            Some(dir) => {
                check_writable_dir(dir)?;
                dir.clone()
            }
            None => default_tmp_dir(),
        };
        let body = args.limit_request_body;
        let metrics_bind = match &args.metrics_bind {
            None => None,
            Some(addr) => match BindSpec::parse(addr)
                .map_err(|e| ConfigError(e.replace("--bind", "--metrics-bind")))?
            {
                spec @ BindSpec::Tcp(_) => Some(spec),
                _ => bail!("--metrics-bind {addr}: give a HOST:PORT (metrics are served over TCP)"),
            },
        };
        let control_socket = if args.no_control_socket {
            None
        } else {
            Some(args.control_socket.clone().unwrap_or_else(|| {
                let dir = std::env::var_os("XDG_RUNTIME_DIR")
                    .map(PathBuf::from)
                    .filter(|d| d.is_dir())
                    .unwrap_or_else(|| worker_tmp_dir.clone());
                dir.join("forkhorn.ctl")
            }))
        };
        let max_boot_failures = args.max_boot_failures;
        let worker_identity = match (&args.user, &args.group) {
            (None, None) => None,
            (user, group) => {
                let (uid, user_gid, user_name) = match user {
                    Some(u) => user::resolve_user(u).map_err(ConfigError)?,
                    None => (
                        nix::unistd::getuid().as_raw(),
                        nix::unistd::getgid().as_raw(),
                        None,
                    ),
                };
                let gid = match group {
                    Some(g) => user::resolve_group(g).map_err(ConfigError)?,
                    None => user_gid,
                };
                Some(Identity {
                    uid,
                    gid,
                    user_name,
                })
            }
        };
        let access_log_format = args.access_logformat.clone();
        crate::access_log::Format::parse(&access_log_format).map_err(ConfigError)?;
        Ok(Config {
            master: MasterSettings {
                app: args.app.clone(),
                static_dotfiles: args.static_dotfiles,
                binds,
                backlog: args.backlog,
                umask: args.umask,
                worker_tmp_dir,
                pidfile: args.pid.clone(),
                control_socket,
                is_control_socket_named: args.control_socket.is_some(),
                metrics_bind,
                access_log: args
                    .access_logfile
                    .as_deref()
                    .map(LogTarget::stdout_or_file),
                error_log: LogTarget::stderr_or_file(&args.error_logfile),
                log_level: args.log_level,
                chdir: args.chdir.clone(),
                pythonpath: args.pythonpath.clone(),
                env: args.env.clone(),
                preload: args.preload,
            },
            worker: WorkerSettings {
                workers,
                timeout: zero_is_none(args.timeout),
                graceful_timeout: args.graceful_timeout,
                keep_alive: zero_is_none(args.keep_alive),
                max_requests: args.max_requests,
                max_requests_jitter: args.max_requests_jitter,
                access_log_format,
                limits: Limits {
                    request_line: args.limit_request_line,
                    fields: args.limit_request_fields,
                    field_size: args.limit_request_field_size,
                    permit_missing_host: args.permit_missing_host,
                    permit_transfer_codings: args.permit_transfer_codings,
                    ..Limits::default()
                },
                limit_request_body: (body > 0).then_some(body),
                worker_connections: args.worker_connections,
                header_timeout: args.header_timeout,
                max_worker_memory: args.max_worker_memory.map(|mb| mb << 20),
                memory_check_interval: args.memory_check_interval,
                slow_request_threshold: args.slow_request_threshold,
                min_worker_lifetime: args.min_worker_lifetime,
                max_boot_failures: (max_boot_failures > 0).then_some(max_boot_failures),
                max_streams_per_worker: args.max_streams_per_worker,
                worker_identity,
                initgroups: args.initgroups,
                tls,
                proxy_allow_from: args.proxy_allow_from.clone(),
                forwarded: Trust {
                    peers: args.forwarded_allow_ips.clone(),
                    fields: args.forwarded_header,
                },
            },
        })
    }
}

impl WorkerSettings {
    /// The request limit for one worker: max_requests plus its own random jitter.
    pub fn draw_max_requests(&self) -> Option<u64> {
        if self.max_requests == 0 {
            return None;
        }
        let jitter = fastrand::u64(0..=self.max_requests_jitter);
        Some(self.max_requests + jitter)
    }
}

fn check_writable_dir(dir: &Path) -> Result<(), ConfigError> {
    if !dir.is_dir() {
        bail!(
            "worker tmp dir {} does not exist or is not a directory; create it or pass another --worker-tmp-dir",
            dir.display()
        );
    }
    if !is_writable_dir(dir) {
        bail!(
            "worker tmp dir {} is not writable; fix its permissions or pass another --worker-tmp-dir",
            dir.display()
        );
    }
    Ok(())
}

fn is_writable_dir(dir: &Path) -> bool {
    nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_ok()
}

/// /dev/shm keeps heartbeats in memory; containers without it fall back to the temp dir.
fn default_tmp_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && is_writable_dir(shm) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["forkhorn"];
        argv.extend_from_slice(args);
        let args = Args::try_parse_from(argv)
            .map_err(|e| value_error(&e).unwrap_or_else(|| e.to_string()))?;
        Config::from_args(&args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_gunicorn() {
        let c = parse(&["-w", "2"]).expect("config");
        assert_eq!(c.master.app, "chat");
        assert_eq!(c.worker.timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.worker.graceful_timeout, Duration::from_secs(30));
        assert_eq!(c.worker.keep_alive, Some(Duration::from_secs(5)));
        assert_eq!(c.master.backlog, 2048);
        assert_eq!(c.worker.workers, 2);
        assert_eq!(c.master.access_log, None);
    }

    /// A self-signed certificate and its key, written to a fresh directory.
    fn cert_pair(name: &str) -> (String, String) {
        let dir =
            std::env::temp_dir().join(format!("forkhorn-config-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let made =
            rcgen::generate_simple_self_signed(vec![format!("{name}.test")]).expect("certificate");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, made.cert.pem()).expect("write");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write");
        let text = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
        (text(&cert), text(&key))
    }

    #[test]
    fn certfile_without_an_https_bind_makes_every_bind_tls() {
        let (cert, key) = cert_pair("every");
        let c = parse(&[
            "-b",
            "127.0.0.1:1",
            "-b",
            "127.0.0.1:2",
            "--certfile",
            &cert,
            "--keyfile",
            &key,
        ])
        .expect("config");
        assert!(c.master.binds.iter().all(|b| b.is_tls));
        assert!(c.worker.tls.is_some());
        let c = parse(&[
            "-b",
            "https://127.0.0.1:1",
            "-b",
            "127.0.0.1:2",
            "--certfile",
            &cert,
            "--keyfile",
            &key,
        ])
        .expect("config");
        let marks: Vec<bool> = c.master.binds.iter().map(|b| b.is_tls).collect();
        assert_eq!(marks, [true, false], "only the https:// bind");
    }

    #[test]
    fn tls_flags_that_cannot_work_are_refused_with_the_fix() {
        let (cert, key) = cert_pair("refused");
        let cases: [(&[&str], &str); 5] = [
            (
                &["-b", "https://127.0.0.1:1"],
                "give --certfile FILE and --keyfile FILE",
            ),
            (&["--certfile", &cert], "give one --keyfile per --certfile"),
            (
                &["--certfile", &cert, "--keyfile", &key, "--cert-reqs", "2"],
                "--cert-reqs 2 needs --ca-certs",
            ),
            (&["--cert-reqs", "1"], "no bind is TLS"),
            (
                &[
                    "--certfile",
                    &cert,
                    "--keyfile",
                    &key,
                    "--tls-min-version",
                    "1.1",
                ],
                "use 1.2 or 1.3",
            ),
        ];
        for (args, want) in cases {
            let err = parse(args).expect_err("refused");
            assert!(err.contains(want), "{args:?}: {err}");
        }
        let err = parse(&["--cert-reqs", "3"]).expect_err("refused");
        assert!(err.contains("--cert-reqs 3: use 0"), "{err}");
    }

    #[test]
    fn proxy_protocol_marks_every_bind_and_allow_lists_parse() {
        let c = parse(&[
            "-b",
            "127.0.0.1:1",
            "-b",
            "unix:/tmp/x.sock",
            "--proxy-protocol",
        ])
        .expect("config");
        assert!(c.master.binds.iter().all(|b| b.expects_proxy_header));
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert!(c.worker.proxy_allow_from.allows(ip("127.0.0.1")));
        assert!(!c.worker.proxy_allow_from.allows(ip("10.0.0.1")));
        assert!(c.worker.forwarded.peers.allows(ip("::1")));
        let c = parse(&[
            "--forwarded-allow-ips",
            "10.0.0.0/8",
            "--proxy-allow-from",
            "*",
        ])
        .expect("config");
        assert!(c.worker.forwarded.peers.allows(ip("10.1.2.3")));
        assert!(!c.worker.forwarded.peers.allows(ip("127.0.0.1")));
        assert!(c.worker.proxy_allow_from.allows(ip("192.0.2.1")));
        let err = parse(&["--forwarded-allow-ips", "10.0.0.300"]).expect_err("refused");
        assert!(err.starts_with("--forwarded-allow-ips 10.0.0.300"), "{err}");
    }

    #[test]
    fn negative_timeout_is_refused_with_the_flag_named() {
        let err = parse(&["-t", "-1"]).expect_err("must fail");
        assert!(err.contains("--timeout"), "{err}");
    }

    #[test]
    fn zero_timeout_disables_the_heartbeat_check() {
        assert_eq!(parse(&["-t", "0"]).expect("config").worker.timeout, None);
    }

    #[test]
    fn other_worker_classes_are_refused() {
        let err = parse(&["-k", "gevent"]).expect_err("must fail");
        assert!(err.contains("only the sync worker class"), "{err}");
    }

    #[test]
    fn threads_beyond_one_are_refused_with_what_to_do_instead() {
        assert!(parse(&["--threads", "1"]).is_ok());
        let err = parse(&["--threads", "4"]).expect_err("must fail");
        assert!(err.contains("--threads 4") && err.contains("-w"), "{err}");
    }

    #[test]
    fn missing_tmp_dir_is_refused_with_the_fix() {
        let err = parse(&["--worker-tmp-dir", "/nonexistent/forkhorn"]).expect_err("must fail");
        assert!(
            err.contains("does not exist") && err.contains("--worker-tmp-dir"),
            "{err}"
        );
    }

    fn usage_line(args: &[&str]) -> String {
        let mut argv = vec!["forkhorn"];
        argv.extend_from_slice(args);
        usage_error_line(&Args::try_parse_from(argv).expect_err("must fail"))
    }

    #[test]
    fn a_usage_error_is_one_line_with_clap_s_suggestion() {
        assert_eq!(
            usage_line(&["--max-request", "3"]),
            "unexpected argument '--max-request' found; a similar argument exists: '--max-requests'"
        );
        assert_eq!(
            usage_line(&["--zzzz"]),
            "unexpected argument '--zzzz' found"
        );
    }

    #[test]
    fn a_bad_workers_value_names_only_the_flag() {
        let err = parse(&["-w", "x"]).expect_err("must fail");
        assert_eq!(err, "--workers \"x\": not a whole number");
    }

    #[test]
    fn a_reload_names_every_master_held_setting_that_changed_and_no_other() {
        let running = parse(&["-w", "2", "-t", "30"]).expect("config");
        let same_master = parse(&["-w", "5", "-t", "7", "--max-requests", "9"]).expect("config");
        assert_eq!(
            running.master.changed(&same_master.master),
            Vec::<&str>::new()
        );
        let moved =
            parse(&["--backlog", "64", "--umask", "077", "-b", "127.0.0.1:9"]).expect("config");
        assert_eq!(
            running.master.changed(&moved.master),
            ["bind", "backlog", "umask"]
        );
    }

    #[test]
    fn a_duration_set_in_code_keeps_every_nanosecond_and_the_flag_s_range() {
        let mut args = Args::try_parse_from(["forkhorn"]).expect("args");
        let exact = Duration::new(2, 123_456_789);
        args.set_seconds(SecondsFlag::Timeout, exact)
            .expect("in range");
        args.set_seconds(SecondsFlag::KeepAlive, Duration::ZERO)
            .expect("zero is off");
        let c = Config::from_args(&args).expect("config");
        assert_eq!(c.worker.timeout, Some(exact));
        assert_eq!(c.worker.keep_alive, None);
        let err = args
            .set_seconds(
                SecondsFlag::GracefulTimeout,
                Duration::from_secs(2_000_000_000),
            )
            .expect_err("too long");
        assert_eq!(
            err,
            "--graceful-timeout 2000000000: must be a number of seconds, 0 or more"
        );
    }

    #[test]
    fn jitter_stays_in_its_range() {
        let c = parse(&["--max-requests", "5", "--max-requests-jitter", "3"]).expect("config");
        for _ in 0..200 {
            let n = c.worker.draw_max_requests().expect("limit");
            assert!((5..=8).contains(&n), "{n}");
        }
        assert_eq!(parse(&[]).expect("config").worker.draw_max_requests(), None);
    }
}
