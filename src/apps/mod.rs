//! Built-in apps, so the binary serves something real with no code written.

pub mod chaos;
pub mod chat;
pub mod echo;
pub mod hello;
#[cfg(feature = "python")]
pub mod python;
#[cfg(not(feature = "python"))]
#[path = "python/spec.rs"]
mod python_spec;
pub mod static_files;

#[cfg(feature = "python")]
use python::spec::PythonSpec;
#[cfg(not(feature = "python"))]
use python_spec::PythonSpec;

use crate::app::App;

/// Every form APP can take, for help and error messages. This is the one
/// list to extend when a new kind of app arrives.
pub const BUILT_IN: &[&str] = &[
    "chat",
    "chat:URL",
    "static:DIR",
    "hello",
    "echo",
    "chaos",
    "module:callable (a Python WSGI app)",
];

/// Whether `spec` names a Python WSGI app (`module:callable`): it has that
/// shape and no built-in app takes it (`hello:app` is Python, since `hello`
/// takes no options; `chat:http://...` is the chat app).
pub fn is_python(spec: &str) -> bool {
    PythonSpec::parse(spec).is_some() && check_built_in(spec).is_err()
}

/// Check an app spec before anything is forked, so a typo is one clear error
/// rather than every worker failing to boot.
pub fn check(spec: &str) -> Result<(), String> {
    match check_built_in(spec) {
        Err(_) if PythonSpec::parse(spec).is_some() => check_python(),
        other => other,
    }
}

fn check_built_in(spec: &str) -> Result<(), String> {
    let (name, option) = match spec.split_once(':') {
        Some((n, o)) => (n, Some(o)),
        None => (spec, None),
    };
    match (name, option) {
        ("chaos", _) => chaos::check(spec),
        ("chat", _) => chat::check(option),
        ("static", Some(dir)) => static_files::check(dir),
        ("static", None) => Err("app static needs a directory: static:DIR".to_owned()),
        ("hello" | "echo", None) => Ok(()),
        ("hello" | "echo", Some(_)) => {
            Err(format!("app {spec:?}: {name} takes no options; use {name}"))
        }
        _ => Err(format!(
            "unknown app {spec:?}; APP is one of {}",
            BUILT_IN.join(", ")
        )),
    }
}

#[cfg(feature = "python")]
fn check_python() -> Result<(), String> {
    Ok(())
}

#[cfg(not(feature = "python"))]
fn check_python() -> Result<(), String> {
    Err(
        "this forkhorn was built without Python (--no-default-features), so it cannot serve a \
         module:callable app; build it with the default features (needs python3-dev)"
            .to_owned(),
    )
}

/// Settings of the apps that come from flags rather than the app spec.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// `static:DIR` serves names starting with `.` (`--static-dotfiles`).
    pub static_dotfiles: bool,
    /// Directories put first on a Python app's `sys.path` (`--pythonpath`).
    pub pythonpath: Vec<std::path::PathBuf>,
}

/// `--preload`: load the app in the master, before any fork. Only a
/// Python app has anything to load; for a built-in one it is a no-op.
pub fn preload(spec: &str, options: &AppOptions) -> Result<(), String> {
    #[cfg(feature = "python")]
    if is_python(spec) {
        return python::preload(spec, &options.pythonpath);
    }
    let _ = options;
    log::warn!("--preload applies to Python apps; {spec:?} is built in, so it is ignored");
    Ok(())
}

/// Build the app for one worker (called after fork).
pub fn build(spec: &str, options: &AppOptions) -> Result<Box<dyn App>, String> {
    check(spec)?;
    #[cfg(feature = "python")]
    if is_python(spec) {
        return Ok(Box::new(python::PythonApp::load(
            spec,
            &options.pythonpath,
        )?));
    }
    let (name, option) = match spec.split_once(':') {
        Some((n, o)) => (n, Some(o)),
        None => (spec, None),
    };
    Ok(match name {
        "hello" => Box::new(hello::hello),
        "echo" => Box::new(echo::echo),
        "chat" => Box::new(chat::Chat::new(option)?),
        "static" => Box::new(static_files::StaticFiles::new(
            option.unwrap_or("."),
            options.static_dotfiles,
        )?),
        _ => Box::new(chaos::Chaos::new(spec)?),
    })
}

/// Query parameter `key` of a target, if present and parseable.
pub(crate) fn query_param<T: std::str::FromStr>(target: &str, key: &str) -> Option<T> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}
