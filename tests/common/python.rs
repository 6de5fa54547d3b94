//! What the Python-app tests need: which interpreter environment to hand
//! forkhorn, and whether the packages a test needs (Flask, Django) are in it.
//!
//! `.ci/run` builds a virtualenv with every package the suite uses and names
//! it in `FORKHORN_TEST_VENV`, and sets `FORKHORN_REQUIRE_PYTHON_PACKAGES=1`
//! so a missing package fails the run there. A plain `cargo test` on a
//! machine without those packages skips the tests that need them, saying so.

use std::path::PathBuf;
use std::process::Command;

use super::Server;

/// The directory holding the Python apps the tests run.
pub fn apps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python_apps")
}

/// The virtualenv the tests run apps in, if one is named.
pub fn venv() -> Option<PathBuf> {
    std::env::var_os("FORKHORN_TEST_VENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Environment for a forkhorn that runs a Python app: the test venv, if any,
/// as an activated virtualenv would set it.
pub fn env() -> Vec<(&'static str, String)> {
    match venv() {
        Some(v) => vec![("VIRTUAL_ENV", v.to_string_lossy().into_owned())],
        None => Vec::new(),
    }
}

/// `forkhorn ARGS` in the test venv's environment (`env`), plus `extra_env`.
pub fn start(args: &[&str], extra_env: &[(&str, &str)]) -> Server {
    let venv = env();
    let mut env: Vec<(&str, &str)> = venv.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(extra_env);
    Server::start_with_env(args, &env)
}

/// The interpreter forkhorn will use: the venv's, else `python3` on PATH.
fn interpreter() -> PathBuf {
    match venv() {
        Some(v) => v.join("bin/python3"),
        None => PathBuf::from("python3"),
    }
}

/// Whether `module` imports in the interpreter forkhorn will use. When it
/// does not, the test should return early: this prints why, and panics
/// instead when `FORKHORN_REQUIRE_PYTHON_PACKAGES=1` (as in CI).
pub fn has_package(module: &str) -> bool {
    let ok = Command::new(interpreter())
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        let why = format!(
            "Python package {module:?} is not installed for {}; \
             `pip install {module}` (or set FORKHORN_TEST_VENV to a venv that has it)",
            interpreter().display()
        );
        if std::env::var("FORKHORN_REQUIRE_PYTHON_PACKAGES").as_deref() == Ok("1") {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
    }
    ok
}
