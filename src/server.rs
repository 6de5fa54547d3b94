//! Starting a server: from forkhorn's command line (the `forkhorn` binary,
//! or [`run`] in a program of your own), or configured in code with
//! [`Server::builder`].
//!
//! Either way the same checks run: every setting becomes a command-line word
//! parsed by the one flag definition (see `config_file`), so a setting means
//! the same thing in a file, in `FORKHORN_CMD_ARGS`, on the command line or
//! in a builder call.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
/// Kept here too, where the builder's users first met them.
pub use crate::app::{AppFactory, Hook, Hooks};
use crate::config::{Config, ConfigError, SecondsFlag};
use crate::config_file;
use crate::listener::{Bind, BindSpec, Listener};
use crate::master::arbiter::Arbiter;
use crate::{apps, logging};

/// Exit status for a bad command line or configuration.
const EXIT_USAGE: u8 = 2;
/// Exit status when the server cannot start (bind, log file, pidfile).
const EXIT_STARTUP: u8 = 1;
/// The app could not be loaded (as a worker reports it; gunicorn's 4).
const EXIT_APP_LOAD: u8 = crate::worker::EXIT_APP_LOAD_FAILED as u8;

/// Where workers get their app.
enum AppSource {
    /// The built-in app named by the APP argument (the `forkhorn` binary).
    BuiltIn,
    /// The program's own app; APP is not accepted.
    Custom(AppFactory),
}

/// Serve `app` with forkhorn's whole command line (every flag but the APP
/// argument) and supervision; returns the exit status for `main`.
///
/// Each worker gets its own clone of `app`, made after fork, so nothing the
/// app holds is shared between processes. For state that must be built in
/// the worker (a connection pool, say) use [`Server::builder`] with
/// [`Builder::app_factory`].
///
/// ```no_run
/// use forkhorn::app::{respond, Request, Response};
///
/// fn main() -> std::process::ExitCode {
///     forkhorn::run(|_req: Request<'_>| -> Response { respond(200, "text/plain", "hi\n") })
/// }
/// ```
pub fn run<A: App + Clone + 'static>(app: A) -> ExitCode {
    let factory: AppFactory = Arc::new(move || Ok(Box::new(app.clone()) as Box<dyn App>));
    launch(
        std::env::args_os().collect(),
        AppSource::Custom(factory),
        Hooks::default(),
        Vec::new(),
    )
}

/// The `forkhorn` binary: built-in apps, and `forkhorn ctl`.
pub fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "ctl") {
        use clap::Parser;
        return match crate::master::control::CtlArgs::try_parse_from(std::env::args_os().skip(1)) {
            Ok(args) => {
                ExitCode::from(u8::try_from(crate::master::control::main(&args)).unwrap_or(1))
            }
            Err(e) => clap_error(e),
        };
    }
    launch(
        std::env::args_os().collect(),
        AppSource::BuiltIn,
        Hooks::default(),
        Vec::new(),
    )
}

/// A server configured in code, for programs with a command line of their own.
pub struct Server;

impl Server {
    /// Start configuring a server.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use forkhorn::app::{respond, Request, Response};
    ///
    /// let status = forkhorn::Server::builder()
    ///     .bind("127.0.0.1:8080")
    ///     .workers(4)
    ///     .timeout(Duration::from_secs(10))
    ///     .app(|_req: Request<'_>| -> Response { respond(200, "text/plain", "hi\n") })
    ///     .when_ready(|| eprintln!("serving"))
    ///     .run();
    /// ```
    pub fn builder() -> Builder {
        Builder {
            words: Vec::new(),
            durations: Vec::new(),
            app: None,
            hooks: Hooks::default(),
        }
    }
}

/// Settings for [`Server::builder`]; finish with [`Builder::run`].
pub struct Builder {
    /// Settings as command-line words (validated like the command line).
    words: Vec<OsString>,
    /// Settings given as `Duration`s: put into the parsed flags as they are
    /// (not parsed back from text), after the flag's own check. They win
    /// over the same flag given in `words`.
    durations: Vec<(SecondsFlag, Duration)>,
    app: Option<AppFactory>,
    hooks: Hooks,
}

impl Builder {
    /// Set any flag by its long name, as on the command line:
    /// `.option("max-requests", "1000")`. Repeat for list flags like `bind`.
    pub fn option(mut self, flag: &str, value: impl ToString) -> Builder {
        self.words
            .push(format!("--{flag}={}", value.to_string()).into());
        self
    }

    /// Turn on a switch flag such as `no-control-socket`.
    pub fn switch(mut self, flag: &str) -> Builder {
        self.words.push(format!("--{flag}").into());
        self
    }

    /// Listen on `addr` (`HOST:PORT`, `[IPV6]:PORT`, `unix:PATH`, `fd://N`,
    /// `https://ADDR` for TLS, `proxy+http://ADDR` for a PROXY header
    /// first); call again for more listeners.
    pub fn bind(self, addr: &str) -> Builder {
        self.option("bind", addr)
    }

    /// Serve TLS with this certificate chain and key (PEM files) on the
    /// `https://` binds, or on every bind if none is marked; call again
    /// for more names (SNI). The master reads them before it forks, and
    /// again on HUP.
    ///
    /// ```no_run
    /// use forkhorn::Server;
    /// use forkhorn::app::{Request, Response, Scheme, respond};
    ///
    /// Server::builder()
    ///     .bind("https://0.0.0.0:8443")
    ///     .tls("/etc/ssl/site.pem", "/etc/ssl/site.key")
    ///     .app(|req: Request<'_>| -> Response {
    ///         let https = req.extensions().get::<Scheme>() == Some(&Scheme::Https);
    ///         respond(200, "text/plain", if https { "secure\n" } else { "plain\n" })
    ///     })
    ///     .run();
    /// ```
    pub fn tls(self, certfile: &str, keyfile: &str) -> Builder {
        self.option("certfile", certfile).option("keyfile", keyfile)
    }

    /// Worker processes to run.
    pub fn workers(self, n: usize) -> Builder {
        self.option("workers", n)
    }

    /// Heartbeat silence after which a worker is replaced (zero: never).
    pub fn timeout(self, d: Duration) -> Builder {
        self.seconds(SecondsFlag::Timeout, d)
    }

    /// Time workers get to finish on stop or reload.
    pub fn graceful_timeout(self, d: Duration) -> Builder {
        self.seconds(SecondsFlag::GracefulTimeout, d)
    }

    /// Idle keep-alive time (zero: no keep-alive).
    pub fn keep_alive(self, d: Duration) -> Builder {
        self.seconds(SecondsFlag::KeepAlive, d)
    }

    /// The `Duration` itself becomes the setting; the word (in seconds)
    /// still goes to the one flag definition, which checks its range and
    /// shows it in `--print-config`.
    fn seconds(mut self, flag: SecondsFlag, d: Duration) -> Builder {
        self.durations.push((flag, d));
        self.option(flag.long(), d.as_secs_f64())
    }

    /// Recycle workers after `n` requests plus up to `jitter` more.
    pub fn max_requests(self, n: u64, jitter: u64) -> Builder {
        self.option("max-requests", n)
            .option("max-requests-jitter", jitter)
    }

    /// Access log file (`-` for stdout).
    pub fn access_log(self, path: &str) -> Builder {
        self.option("access-logfile", path)
    }

    /// Error log file (`-` for stderr) and level.
    pub fn error_log(self, path: &str, level: &str) -> Builder {
        self.option("error-logfile", path)
            .option("log-level", level)
    }

    /// Serve `app`; each worker gets its own clone, made after fork.
    pub fn app<A: App + Clone + 'static>(mut self, app: A) -> Builder {
        self.app = Some(Arc::new(move || Ok(Box::new(app.clone()) as Box<dyn App>)));
        self
    }

    /// Build each worker's app in the worker, after fork (per-worker state
    /// such as connection pools starts here). An `Err` stops the server
    /// with exit status 4, naming the error.
    pub fn app_factory<A, F>(mut self, factory: F) -> Builder
    where
        A: App + 'static,
        F: Fn() -> Result<A, String> + 'static,
    {
        self.app = Some(Arc::new(move || {
            factory().map(|a| Box::new(a) as Box<dyn App>)
        }));
        self
    }

    /// Run `f` in the master before binding.
    pub fn on_starting(mut self, f: impl Fn() + 'static) -> Builder {
        self.hooks.on_starting = Some(Box::new(f));
        self
    }

    /// Run `f` in the master once every worker first serves.
    pub fn when_ready(mut self, f: impl Fn() + 'static) -> Builder {
        self.hooks.when_ready = Some(Box::new(f));
        self
    }

    /// Run `f` in the master on each reload.
    pub fn on_reload(mut self, f: impl Fn() + 'static) -> Builder {
        self.hooks.on_reload = Some(Box::new(f));
        self
    }

    /// Run `f` in the master just before it exits.
    pub fn on_exit(mut self, f: impl Fn() + 'static) -> Builder {
        self.hooks.on_exit = Some(Box::new(f));
        self
    }

    /// Run `f` in each worker just before it exits normally.
    pub fn on_worker_exit(mut self, f: impl Fn() + 'static) -> Builder {
        self.hooks.on_worker_exit = Some(Box::new(f));
        self
    }

    /// Start serving; returns when the server stops, with its exit status.
    pub fn run(self) -> ExitCode {
        let Some(app) = self.app else {
            eprintln!(
                "forkhorn: the server has no app; call .app(...) or .app_factory(...) on the builder"
            );
            return ExitCode::from(EXIT_USAGE);
        };
        let program = std::env::args_os()
            .next()
            .unwrap_or_else(|| "forkhorn".into());
        let argv = std::iter::once(program).chain(self.words).collect();
        launch(argv, AppSource::Custom(app), self.hooks, self.durations)
    }
}

/// Load the settings, bind, and run the master until it stops.
fn launch(
    argv: Vec<OsString>,
    source: AppSource,
    hooks: Hooks,
    durations: Vec<(SecondsFlag, Duration)>,
) -> ExitCode {
    let loaded = match load(&argv, &durations) {
        Ok(loaded) => loaded,
        Err(config_file::LoadError::Usage(e)) => return clap_error(e),
        Err(e @ config_file::LoadError::Value(_)) => {
            eprintln!("forkhorn: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let args = &loaded.args;
    let builtin = matches!(source, AppSource::BuiltIn);
    if !builtin && loaded.app_given() {
        eprintln!(
            "forkhorn: this program serves its own app; it takes no APP argument ({:?})",
            args.app
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let checked = loaded.config().and_then(|c| {
        if builtin {
            apps::check(&c.master.app).map_err(ConfigError)?;
        }
        Ok(c)
    });
    let mut config = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("forkhorn: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.print_config {
        print!("{}", loaded.to_toml());
        return ExitCode::SUCCESS;
    }
    if args.check_config {
        return match check_config(&config) {
            Ok(()) => {
                println!("forkhorn: configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("forkhorn: {e}");
                ExitCode::from(EXIT_STARTUP)
            }
        };
    }
    if let Err(e) = logging::init(
        &config.master.error_log,
        config.master.access_log.as_ref(),
        config.master.log_level,
    ) {
        eprintln!("forkhorn: {e}");
        return ExitCode::from(EXIT_STARTUP);
    }
    crate::sys::process::raise_fd_limit();
    if let Some(mask) = config.master.umask {
        crate::sys::user::set_umask(mask);
    }
    if crate::sys::user::is_root() && config.worker.worker_identity.is_none() {
        log::warn!(
            "running as root without --user: workers run as root too; pass -u USER to drop privileges"
        );
    }
    // Sockets handed over by an old master (USR2) are exactly its binds;
    // systemd's replace the default bind and add to explicit ones.
    let upgrade = crate::master::upgrade::Inherited::from_env();
    let from_upgrade = !upgrade.listeners.is_empty();
    let inherited = if from_upgrade {
        InheritedSockets::FromOldMaster(upgrade.listeners.clone())
    } else {
        InheritedSockets::FromSystemd(crate::master::systemd::listen_fds())
    };
    adopt_inherited(
        &mut config,
        &inherited,
        from_upgrade || args.bind.is_empty(),
        upgrade.metrics_fd,
    );
    if let Err(e) = check_tls_binds(&config) {
        log::error!("{e}");
        eprintln_if_logging_elsewhere(&config, &e);
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(hook) = &hooks.on_starting {
        hook();
    }
    let mut listeners = Vec::new();
    for spec in &config.master.binds {
        match Listener::bind(spec, config.master.backlog) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                // Unix socket files already created are removed again.
                listeners.iter().for_each(Listener::remove_socket_file);
                log::error!("{e}");
                eprintln_if_logging_elsewhere(&config, &e.to_string());
                return ExitCode::from(EXIT_STARTUP);
            }
        }
    }
    if let Err(e) = enter_app_environment(&config) {
        log::error!("{e}");
        eprintln_if_logging_elsewhere(&config, &e);
        listeners.iter().for_each(Listener::remove_socket_file);
        return ExitCode::from(EXIT_STARTUP);
    }
    let options = apps::AppOptions {
        static_dotfiles: config.master.static_dotfiles,
        pythonpath: config.master.pythonpath.clone(),
    };
    if config.master.preload
        && builtin
        && let Err(e) = apps::preload(&config.master.app, &options)
    {
        log::error!("{e}");
        eprintln_if_logging_elsewhere(&config, &e);
        listeners.iter().for_each(Listener::remove_socket_file);
        return ExitCode::from(EXIT_APP_LOAD);
    }
    let factory: AppFactory = match source {
        AppSource::BuiltIn => {
            let spec = config.master.app.clone();
            Arc::new(move || apps::build(&spec, &options))
        }
        AppSource::Custom(f) => f,
    };
    let arbiter = match Arbiter::new(config.clone(), listeners, factory) {
        Ok(a) => a,
        Err(e) => {
            log::error!("{e}");
            eprintln_if_logging_elsewhere(&config, &e.to_string());
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    // HUP re-reads every source, the config file included.
    let reload = move || -> Result<Config, String> {
        let loaded = load(&argv, &durations).map_err(|e| e.to_string())?;
        let mut config = loaded.config().map_err(|e| e.to_string())?;
        if builtin {
            apps::check(&config.master.app)?;
        }
        let replace = from_upgrade || loaded.args.bind.is_empty();
        adopt_inherited(&mut config, &inherited, replace, upgrade.metrics_fd);
        check_tls_binds(&config)?;
        Ok(config)
    };
    let mut arbiter = arbiter.with_reloader(Box::new(reload)).with_hooks(hooks);
    if let Some(relaunch) = crate::master::upgrade::Relaunch::from_current_process() {
        arbiter = arbiter.with_relaunch(relaunch);
    }
    if let Some(old) = upgrade.old_master {
        arbiter = arbiter.taking_over_from(old);
    }
    ExitCode::from(u8::try_from(arbiter.run()).unwrap_or(1))
}

/// `--chdir` and `--env`, applied in the master before the app factory is
/// made, so every worker starts in that directory with that environment.
fn enter_app_environment(config: &Config) -> Result<(), String> {
    if let Some(dir) = &config.master.chdir {
        std::env::set_current_dir(dir).map_err(|e| {
            format!(
                "cannot change to --chdir {}: {e} (is the path right?)",
                dir.display()
            )
        })?;
    }
    for (key, value) in &config.master.env {
        // SAFETY: the master is single-threaded (it forks workers and never
        // starts a thread), so nothing reads the environment concurrently.
        unsafe { std::env::set_var(key, value) };
    }
    Ok(())
}

/// Every settings source, then the `Duration`s a builder set.
fn load(
    argv: &[OsString],
    durations: &[(SecondsFlag, Duration)],
) -> Result<config_file::Loaded, config_file::LoadError> {
    let mut loaded = config_file::load(argv.to_vec())?;
    for &(flag, d) in durations {
        loaded
            .args
            .set_seconds(flag, d)
            .map_err(|e| config_file::LoadError::Value(ConfigError(e)))?;
    }
    Ok(loaded)
}

/// A listener inherited as TLS (from an old master, or systemd's under
/// `--certfile`) needs the certificate still: a configuration that lost
/// it would leave workers nothing to answer its handshakes with.
fn check_tls_binds(config: &Config) -> Result<(), String> {
    if config.worker.tls.is_none() && config.master.binds.iter().any(|b| b.is_tls) {
        return Err(
            "a listener handed over by the old master serves TLS, but the configuration has no --certfile/--keyfile; give them (or restart to serve plain HTTP)"
                .to_owned(),
        );
    }
    Ok(())
}

/// Listening sockets a master starts with instead of binding.
#[derive(Clone)]
enum InheritedSockets {
    /// An old master's on upgrade (USR2): exactly its binds, marked as it
    /// served them.
    FromOldMaster(Vec<Bind>),
    /// systemd's socket activation: bare descriptors.
    FromSystemd(Vec<std::os::fd::RawFd>),
}

/// Inherited listening sockets replace the binds (an old master's always,
/// systemd's when no -b was given) or add to explicit ones; an old
/// master's metrics socket replaces the metrics bind.
fn adopt_inherited(
    config: &mut Config,
    inherited: &InheritedSockets,
    replace: bool,
    metrics_fd: Option<std::os::fd::RawFd>,
) {
    match inherited {
        InheritedSockets::FromOldMaster(binds) if !binds.is_empty() => {
            config.master.binds = binds.clone();
        }
        InheritedSockets::FromSystemd(fds) if !fds.is_empty() => {
            // systemd's sockets take the marks every bind has in common
            // (`--certfile` with no https:// bind makes them all TLS,
            // `--proxy-protocol` all proxied); plain otherwise.
            let binds = &config.master.binds;
            let all = |mark: fn(&Bind) -> bool| !binds.is_empty() && binds.iter().all(mark);
            let is_tls = all(|b| b.is_tls);
            let expects_proxy_header = all(|b| b.expects_proxy_header);
            let adopted = fds.iter().map(|&fd| Bind {
                addr: BindSpec::Fd(fd),
                is_tls,
                expects_proxy_header,
            });
            if replace {
                config.master.binds = adopted.collect();
            } else {
                config.master.binds.extend(adopted);
            }
        }
        _ => {}
    }
    if let Some(fd) = metrics_fd {
        config.master.metrics_bind = Some(BindSpec::Fd(fd));
    }
}

/// `--check-config`: everything a start would need, without serving:
/// binds (bound and released at once), log files, the pidfile's directory.
fn check_config(config: &Config) -> Result<(), String> {
    for spec in &config.master.binds {
        let listener = Listener::bind(spec, 1).map_err(|e| e.to_string())?;
        listener.remove_socket_file();
    }
    for target in std::iter::once(&config.master.error_log).chain(config.master.access_log.as_ref())
    {
        if let logging::LogTarget::File(path) = target {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        }
    }
    if let Some(pidfile) = &config.master.pidfile {
        let dir = pidfile
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(format!(
                "pidfile directory {} does not exist",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// A start-up failure must reach the person at the terminal even when the
/// error log goes to a file.
fn eprintln_if_logging_elsewhere(config: &Config, message: &str) {
    if config.master.error_log != logging::LogTarget::Stderr {
        eprintln!("forkhorn: {message}");
    }
}

/// clap's errors come with usage text; forkhorn prints one line with the
/// problem and where to look.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    eprintln!("forkhorn: {} (see forkhorn --help)", first_line(&e));
    ExitCode::from(EXIT_USAGE)
}

/// The one line of a clap error that says what is wrong, with clap's tips.
fn first_line(e: &clap::Error) -> String {
    crate::config::usage_error_line(e)
}
