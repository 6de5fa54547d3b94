//! The `forkhorn` command: flags -> Config -> listeners -> Arbiter::run.

use std::process::ExitCode;

use clap::Parser;

use forkhorn::arbiter::Arbiter;
use forkhorn::config::Config;
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
    let loaded = match forkhorn::config_file::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(e) => return clap_error(e),
    };
    let args = &loaded.args;
    let mut config = match loaded.config().and_then(|c| {
        apps::check(&c.app).map_err(forkhorn::config::ConfigError)?;
        Ok(c)
    }) {
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
    // Sockets handed over by an old master (USR2) are exactly its binds;
    // systemd's replace the default bind and add to explicit ones.
    let upgrade = forkhorn::upgrade::Inherited::from_env();
    let from_upgrade = !upgrade.listener_fds.is_empty();
    let inherited = if from_upgrade {
        upgrade.listener_fds.clone()
    } else {
        forkhorn::systemd::listen_fds()
    };
    let replace_binds = from_upgrade || args.bind.is_empty();
    adopt_inherited(&mut config, &inherited, replace_binds);
    if let Some(fd) = upgrade.metrics_fd {
        config.metrics_bind = Some(forkhorn::listener::BindSpec::Fd(fd));
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
    // HUP re-reads every source, the config file included.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let arbiter = arbiter.with_reloader(Box::new(move || {
        let loaded = forkhorn::config_file::load(argv.clone()).map_err(|e| first_line(&e))?;
        let mut config = loaded.config().map_err(|e| e.to_string())?;
        apps::check(&config.app)?;
        adopt_inherited(
            &mut config,
            &inherited,
            from_upgrade || loaded.args.bind.is_empty(),
        );
        if let Some(fd) = upgrade.metrics_fd {
            config.metrics_bind = Some(forkhorn::listener::BindSpec::Fd(fd));
        }
        Ok(config)
    }));
    let arbiter = match forkhorn::upgrade::Relaunch::from_current_process() {
        Some(relaunch) => arbiter.with_relaunch(relaunch),
        None => arbiter,
    };
    let arbiter = match upgrade.old_master {
        Some(old) => arbiter.taking_over_from(old),
        None => arbiter,
    };
    let code = arbiter.run();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// systemd's sockets replace the default bind; explicit -b ones are added to them.
fn adopt_inherited(config: &mut Config, inherited: &[std::os::fd::RawFd], replace: bool) {
    if inherited.is_empty() {
        return;
    }
    if replace {
        config.binds.clear();
    }
    config.binds.extend(
        inherited
            .iter()
            .map(|&fd| forkhorn::listener::BindSpec::Fd(fd)),
    );
}

/// `--check-config`: everything a start would need, without serving:
/// binds (bound and released at once), log files, the pidfile's directory.
fn check_config(config: &Config) -> Result<(), String> {
    for spec in &config.binds {
        // An inherited descriptor is only checked when it is really there.
        let listener = Listener::bind(spec, 1).map_err(|e| e.to_string())?;
        listener.remove_socket_file();
    }
    for target in std::iter::once(&config.error_log).chain(config.access_log.as_ref()) {
        if let logging::LogTarget::File(path) = target {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        }
    }
    if let Some(pidfile) = &config.pidfile {
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
    eprintln!("forkhorn: {} (see forkhorn --help)", first_line(&e));
    ExitCode::from(EXIT_USAGE)
}

/// The one line of a clap error that says what is wrong.
fn first_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_owned()
}
