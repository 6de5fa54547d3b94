//! The public request corpus (from gunicorn's test suite, kept in
//! `tests/corpus`) and its runner (`tests/corpus/run.py`), which replays
//! each case against a server that echoes requests and checks the answers.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The options that make forkhorn as lenient as the corpus expects: gunicorn
/// accepts HTTP/1.1 requests without Host and codings before a final
/// `chunked`, forkhorn refuses both by default.
pub const CORPUS_OPTIONS: [&str; 2] = ["--permit-missing-host", "--permit-transfer-codings"];

pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The runner, or a failure saying what is missing.
fn runner() -> PathBuf {
    let run_py = corpus_dir().join("run.py");
    assert!(
        run_py.is_file(),
        "the corpus runner {} is missing; restore it from version control",
        run_py.display()
    );
    let python = Command::new("python3").arg("--version").output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "python3 is needed to replay the conformance corpus; install it (.ci/run does)"
    );
    run_py
}

/// Replay the whole corpus against the echoing server on `port`, sending in
/// `mode` (`all`, `lines` or `bytes`), with `extra` runner arguments.
pub fn run_corpus(port: u16, mode: &str, extra: &[&str]) -> Output {
    Command::new("python3")
        .arg(runner())
        .args([
            "--port",
            &port.to_string(),
            "--echo",
            "--all-responses",
            "--mode",
            mode,
            "--corpus",
        ])
        .arg(corpus_dir().join("gunicorn-requests"))
        .args(extra)
        .output()
        .expect("run python3")
}

/// The runner's `N passed, N failed, N skipped` line as (passed, failed),
/// and all of its stdout.
pub fn summary(out: &Output) -> (u32, u32, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    let numbers: Vec<u32> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [passed, failed, _skipped] => (passed, failed, stdout),
        _ => panic!(
            "the runner printed no summary line; stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Replay the whole corpus against `port` in each send mode (all at once,
/// line by line, byte by byte): every case must pass.
pub fn passes_in_every_mode(port: u16, extra: &[&str]) {
    for mode in ["all", "lines", "bytes"] {
        let out = run_corpus(port, mode, extra);
        let (passed, failed, stdout) = summary(&out);
        assert!(
            out.status.success() && failed == 0,
            "mode {mode}: {failed} failed\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The corpus has 140 files, a few needing non-default settings.
        assert!(passed >= 100, "mode {mode}: only {passed} cases ran");
    }
}
