//! The public request corpus (from gunicorn's test suite, kept in
//! `tests/corpus`) replayed against a real `forkhorn echo` by the shared
//! harness `../shared/conformance/run.py`, in all three send modes: the whole
//! request at once, line by line, and one byte at a time. Without the harness
//! beside the checkout this test says so and passes; the same corpus is
//! replayed through the parser by `src/http/corpus_tests.rs` either way.

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

fn runner() -> Option<std::path::PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/run.py");
    path.exists().then_some(path)
}

#[test]
fn the_public_corpus_passes_in_every_send_mode() {
    let Some(run_py) = runner() else {
        eprintln!("skipped: ../shared/conformance/run.py is not beside the checkout");
        return;
    };
    if Command::new("python3").arg("--version").output().is_err() {
        panic!("python3 is needed for the conformance corpus (.ci/run installs it)");
    }
    let server = Server::start(&["-w", "2", "echo"]);
    for mode in ["all", "lines", "bytes"] {
        let out = Command::new("python3")
            .arg(&run_py)
            .args([
                "--port",
                &server.port.to_string(),
                "--echo",
                "--all-responses",
                "--mode",
                mode,
                "--corpus",
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/corpus/gunicorn-requests"
                ),
            ])
            .output()
            .expect("run python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout.lines().last().unwrap_or_default().to_owned();
        assert!(
            out.status.success() && summary.contains(" 0 failed"),
            "mode {mode}: {summary}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
