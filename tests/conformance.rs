//! The public request corpus (from gunicorn's test suite, kept in
//! `tests/corpus`) replayed against a real `forkhorn echo` by the corpus
//! runner kept beside it (`tests/corpus/run.py`), in all three send modes:
//! the whole request at once, line by line, and one byte at a time. The same
//! corpus is replayed through the parser by `src/http/corpus_tests.rs`.
//!
//! Nothing here is skipped: without python3 or the runner the test fails,
//! since a test that did nothing must not pass.
//!
//! The corpus follows gunicorn, which accepts HTTP/1.1 requests without Host
//! and codings such as `gzip` before a final `chunked`; forkhorn refuses both
//! by default (RFC 9112 §3.2, §6.1), so the corpus runs with the two options
//! that permit them, and a second run checks which cases the defaults refuse.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::Server;

/// The options that make forkhorn as lenient as the corpus expects.
const CORPUS_OPTIONS: [&str; 2] = ["--permit-missing-host", "--permit-transfer-codings"];

fn corpus_dir() -> PathBuf {
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

fn run_corpus(server: &Server, mode: &str, extra: &[&str]) -> Output {
    Command::new("python3")
        .arg(runner())
        .args([
            "--port",
            &server.port.to_string(),
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

/// The `N passed, N failed, N skipped` line, as numbers.
fn summary(out: &Output) -> (u32, u32, String) {
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

#[test]
fn the_public_corpus_passes_in_every_send_mode() {
    let mut args = vec!["-w", "2"];
    args.extend(CORPUS_OPTIONS);
    args.push("echo");
    let server = Server::start(&args);
    for mode in ["all", "lines", "bytes"] {
        let out = run_corpus(&server, mode, &[]);
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

/// With the defaults, the only corpus cases that fail are "accept" cases
/// without Host or with a coding before `chunked`, and they fail by being
/// refused, never by a desync.
#[test]
fn with_the_defaults_only_the_lenient_cases_are_refused() {
    let server = Server::start(&["-w", "2", "echo"]);
    let out = run_corpus(&server, "all", &[]);
    let (_, failed, stdout) = summary(&out);
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed > 0, "the defaults accepted every case:\n{stdout}");
    let manifest = std::fs::read_to_string(corpus_dir().join("gunicorn-requests/manifest.json"))
        .expect("read manifest");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest is JSON");
    let cases = manifest["cases"].as_array().expect("cases");
    for line in failures {
        // `FAIL valid/004.http (accept): statuses [400]`
        let file = line.split_whitespace().nth(1).unwrap_or_default();
        let case = cases
            .iter()
            .find(|c| c["file"] == file)
            .unwrap_or_else(|| panic!("{line}: not in the manifest"));
        assert_eq!(case["expect"], "accept", "{line}");
        let requests = case["requests"].as_array().expect("requests");
        let lenient = requests.iter().any(|r| {
            let headers = r["headers"].as_array().expect("headers");
            let has = |name: &str| {
                headers
                    .iter()
                    .any(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            };
            let coded = headers.iter().any(|h| {
                h[0].as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("transfer-encoding"))
                    && h[1]
                        .as_str()
                        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("chunked"))
            });
            !has("host") || coded
        });
        assert!(lenient, "{line}: refused for another reason\n{case}");
        // `statuses [400]`, or `[200, 400]` when an earlier pipelined
        // request had Host: the refusal is the last answer on the connection.
        let refused = line.ends_with(" 400]")
            || line.ends_with(" 501]")
            || line.ends_with("[400]")
            || line.ends_with("[501]");
        assert!(refused, "{line}: not a refusal ending the connection");
    }
}
