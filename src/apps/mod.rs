//! Built-in apps, so the binary serves something real with no code written.

pub mod chaos;
pub mod echo;
pub mod hello;

use crate::app::App;

/// The built-in app names, for help and error messages.
pub const BUILT_IN: &[&str] = &["hello", "echo", "chaos"];

/// Check an app spec before anything is forked, so a typo is one clear error
/// rather than every worker failing to boot.
pub fn check(spec: &str) -> Result<(), String> {
    let name = spec.split_once(':').map_or(spec, |(n, _)| n);
    if BUILT_IN.contains(&name) {
        if name == "chaos" {
            return chaos::check(spec);
        }
        if spec.contains(':') {
            return Err(format!("app {spec:?}: {name} takes no options; use {name}"));
        }
        Ok(())
    } else {
        Err(format!(
            "unknown app {spec:?}; built-in apps are {}",
            BUILT_IN.join(", ")
        ))
    }
}

/// Build the app for one worker (called after fork).
pub fn build(spec: &str) -> Result<Box<dyn App>, String> {
    check(spec)?;
    let name = spec.split_once(':').map_or(spec, |(n, _)| n);
    Ok(match name {
        "hello" => Box::new(hello::hello),
        "echo" => Box::new(echo::echo),
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
