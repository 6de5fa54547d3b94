//! What a user reads when a setting is wrong: one line on stderr that names
//! the mistake, where it was made and the fix, and exit status 2 (usage).
//! Issue 12, §5 "Messages". None of these starts a server: each run fails
//! while the settings are checked.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Run forkhorn with `args` (and `env`, nothing inherited that steers it);
/// returns its exit code and its stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("WEB_CONCURRENCY")
        .env_remove("PORT")
        .env_remove("FORKHORN_CMD_ARGS")
        .envs(env.iter().copied())
        .output()
        .expect("run forkhorn");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The run failed as a usage error with exactly one stderr line, which is
/// returned.
fn usage_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let (code, stderr) = run(args, env);
    assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line for {args:?}: {stderr}");
    assert!(
        stderr.matches("forkhorn --help").count() <= 1,
        "help pointer at most once: {stderr}"
    );
    lines[0].to_owned()
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("forkhorn.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn a_misspelt_flag_gets_clap_s_suggestion() {
    let line = usage_error(&["--wrokers", "3", "hello"], &[]);
    assert_eq!(
        line,
        "forkhorn: unexpected argument '--wrokers' found; \
         a similar argument exists: '--workers' (see forkhorn --help)"
    );
}

#[test]
fn a_misspelt_key_in_the_file_gets_did_you_mean() {
    let dir = fresh_dir();
    let path = write_config(&dir, "workers = 2\ntimout = 3\n");
    let line = usage_error(&["-c", &path, "hello"], &[]);
    assert_eq!(
        line,
        format!(
            "forkhorn: {path}:2: timout: unknown key; did you mean `timeout`? (see forkhorn --help)"
        )
    );
    // A key like no other says what keys look like instead of guessing.
    let path = write_config(&dir, "frobnicate = 1\n");
    let line = usage_error(&["-c", &path, "hello"], &[]);
    assert!(
        line.contains(":1: frobnicate: unknown key; keys are the long flag names with _ for -"),
        "{line}"
    );
    assert!(!line.contains("did you mean"), "{line}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn no_message_points_at_help_twice() {
    let dir = fresh_dir();
    let path = write_config(&dir, "frobnicate = 1\n");
    // usage_error asserts the single pointer; these are the messages that
    // had it twice, or could.
    for args in [
        vec!["-c", path.as_str(), "hello"],
        vec!["--bogus"],
        vec!["-w"],
        vec!["--log-level"],
    ] {
        let line = usage_error(&args, &[]);
        assert!(line.ends_with("(see forkhorn --help)"), "{line}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unknown_app_lists_every_app_form() {
    let line = usage_error(&["nope"], &[]);
    assert_eq!(
        line,
        "forkhorn: unknown app \"nope\"; APP is one of chat, chat:URL, static:DIR, hello, echo, chaos, module:callable (a Python WSGI app)"
    );
}

#[test]
fn a_bad_workers_value_in_the_file_names_the_file_not_the_environment() {
    let dir = fresh_dir();
    let path = write_config(&dir, "# workers\n\nworkers = \"many\"\n");
    let line = usage_error(&["-c", &path, "hello"], &[]);
    assert_eq!(
        line,
        format!("forkhorn: {path}:3: workers: --workers \"many\": not a whole number")
    );
    // Even with WEB_CONCURRENCY set, the file's value is the one at fault.
    let path = write_config(&dir, "workers = 0\n");
    let line = usage_error(&["-c", &path, "hello"], &[("WEB_CONCURRENCY", "2")]);
    assert_eq!(
        line,
        format!("forkhorn: {path}:1: workers: --workers 0: at least one worker is needed")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_web_concurrency_names_the_variable() {
    let line = usage_error(&["hello"], &[("WEB_CONCURRENCY", "many")]);
    assert_eq!(
        line,
        "forkhorn: WEB_CONCURRENCY=\"many\": not a whole number \
         (WEB_CONCURRENCY sets --workers; fix or unset it)"
    );
    // The same mistake on the command line names the flag and nothing else.
    let line = usage_error(&["-w", "many", "hello"], &[]);
    assert_eq!(line, "forkhorn: --workers \"many\": not a whole number");
}

#[test]
fn an_out_of_range_port_names_the_range() {
    let line = usage_error(&["-b", "127.0.0.1:99999", "hello"], &[]);
    assert_eq!(
        line,
        "forkhorn: --bind 127.0.0.1:99999: port 99999 is out of range; \
         use a port from 0 to 65535 (0 picks a free one)"
    );
}
