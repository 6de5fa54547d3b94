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

use common::Server;
use common::corpus::{CORPUS_OPTIONS, corpus_dir, passes_in_every_mode, run_corpus, summary};

#[test]
fn the_public_corpus_passes_in_every_send_mode() {
    let mut args = vec!["-w", "2"];
    args.extend(CORPUS_OPTIONS);
    args.push("echo");
    let server = Server::start(&args);
    passes_in_every_mode(server.port, &[]);
}

/// With the defaults, the only corpus cases that fail are "accept" cases
/// without Host or with a coding before `chunked`, and they fail by being
/// refused, never by a desync.
#[test]
fn with_the_defaults_only_the_lenient_cases_are_refused() {
    let server = Server::start(&["-w", "2", "echo"]);
    let out = run_corpus(server.port, "all", &[]);
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
