//! The `forkhorn` command: flags -> Config -> listeners -> Arbiter::run.

use std::process::ExitCode;

use clap::Parser;

use forkhorn::arbiter::Arbiter;
use forkhorn::config::{Args, Config};
use forkhorn::listener::Listener;
use forkhorn::{apps, logging};

/// Exit status for a bad command line or configuration.
const EXIT_USAGE: u8 = 2;
/// Exit status when the server cannot start (bind, log file, pidfile).
const EXIT_STARTUP: u8 = 1;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "ctl") {
        return match forkhorn::control::CtlArgs::try_parse_from(std::env::args_os().skip(1)) {
            Ok(args) => ExitCode::from(u8::try_from(forkhorn::control::main(&args)).unwrap_or(1)),
            Err(e) => clap_error(e),
        };
    }
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => return clap_error(e),
    };
    let mut config = match Config::from_args(&args).and_then(|c| {
        apps::check(&c.app).map_err(forkhorn::config::ConfigError)?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("forkhorn: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = logging::init(
        &config.error_log,
        config.access_log.as_ref(),
        config.log_level,
    ) {
        eprintln!("forkhorn: {e}");
        return ExitCode::from(EXIT_STARTUP);
    }
    forkhorn::sys::process::raise_fd_limit();
    if let Some(mask) = config.umask {
        forkhorn::sys::user::set_umask(mask);
    }
    if forkhorn::sys::user::is_root() && config.worker_identity.is_none() {
        log::warn!(
            "running as root without --user: workers run as root too; pass -u USER to drop privileges"
        );
    }
    let inherited = forkhorn::systemd::listen_fds();
    if !inherited.is_empty() {
        // systemd's sockets replace the default bind; explicit -b ones are added to them.
        if args.bind.is_empty() {
            config.binds.clear();
        }
        config
            .binds
            .extend(inherited.into_iter().map(forkhorn::listener::BindSpec::Fd));
    }
    let mut listeners = Vec::new();
    for spec in &config.binds {
        match Listener::bind(spec, config.backlog) {
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
    let spec = config.app.clone();
    let factory = Box::new(move || apps::build(&spec));
    let arbiter = match Arbiter::new(config.clone(), listeners, factory) {
        Ok(a) => a,
        Err(e) => {
            log::error!("{e}");
            eprintln_if_logging_elsewhere(&config, &e.to_string());
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    let code = arbiter.run();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// A start-up failure must reach the person at the terminal even when the
/// error log goes to a file.
fn eprintln_if_logging_elsewhere(config: &Config, message: &str) {
    if config.error_log != logging::LogTarget::Stderr {
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
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    eprintln!("forkhorn: {first} (see forkhorn --help)");
    ExitCode::from(EXIT_USAGE)
}
