//! `static:DIR` served by a real forkhorn: content types, validators and 304,
//! ranges, directories, and no way out of DIR.
//!
//! Each test builds its own tree: `BASE/secret` just outside the served
//! `BASE/www`, so a traversal that works would show the secret.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use common::{Client, IO_TIMEOUT, Response, Server, fresh_dir, request};

const SECRET: &str = "TOP SECRET: outside the served directory";
const HELLO: &str = "Hello, static world!\n";

/// A served directory beside a secret, with a forkhorn serving it; both
/// removed on drop.
struct Site {
    base: PathBuf,
    www: PathBuf,
    server: Server,
}

impl Site {
    /// BASE/secret, and BASE/www holding:
    /// `hello.txt`, `page.html`, `blob.xyz`, `with space.txt`,
    /// `docs/index.html`, `empty/` (no index), `a/`, and the symlinks
    /// `escape -> ../secret`, `escape-abs -> BASE/secret`,
    /// `escape-dir -> ..` and `alias.txt -> hello.txt`; and the dotfiles
    /// `.env`, `.git/config` and `docs/.hidden`.
    fn new() -> Site {
        Site::with_flags(&[])
    }

    /// `new`, with extra forkhorn flags.
    fn with_flags(flags: &[&str]) -> Site {
        let base = fresh_dir();
        let www = base.join("www");
        for dir in ["docs", "empty", "a"] {
            std::fs::create_dir_all(www.join(dir)).expect("create fixture dir");
        }
        write(&base.join("secret"), SECRET.as_bytes());
        write(&www.join("hello.txt"), HELLO.as_bytes());
        write(&www.join("page.html"), b"<h1>page</h1>\n");
        write(&www.join("blob.xyz"), &[0, 1, 2, 3, 254, 255]);
        write(&www.join("with space.txt"), b"spaced\n");
        write(&www.join("docs/index.html"), b"<h1>docs</h1>\n");
        std::fs::create_dir_all(www.join(".git")).expect("create .git");
        write(&www.join(".env"), b"API_KEY=dotenv-value\n");
        write(&www.join(".git/config"), b"[core] dot-git-value\n");
        write(&www.join("docs/.hidden"), b"hidden-value\n");
        let symlink = |target: &Path, link: &str| {
            std::os::unix::fs::symlink(target, www.join(link)).expect("create symlink");
        };
        symlink(Path::new("../secret"), "escape");
        symlink(&base.join("secret"), "escape-abs");
        symlink(Path::new(".."), "escape-dir");
        symlink(Path::new("hello.txt"), "alias.txt");
        let app = format!("static:{}", www.to_str().expect("utf-8 temp dir"));
        let mut args = vec!["-w", "1"];
        args.extend_from_slice(flags);
        args.push(&app);
        let server = Server::start(&args);
        Site { base, www, server }
    }

    fn get(&self, path: &str) -> Response {
        self.send("GET", path, &[])
    }

    /// One request on a fresh connection, with `Connection: close`.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut all = vec![("Connection", "close")];
        all.extend_from_slice(headers);
        let mut client = Client::connect(self.server.port).expect("connect");
        client
            .send(&request(method, path, &all, b""))
            .expect("send request");
        client.read_response().expect("read response")
    }

    /// Everything the server sends back for `raw`, until it closes.
    fn exchange_raw(&self, raw: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.server.port)).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.write_all(raw).expect("send request");
        let mut out = Vec::new();
        stream.read_to_end(&mut out).expect("read until close");
        out
    }

    /// `path` must be a plain 404 that gives nothing away.
    fn assert_not_found(&self, response: &Response, path: &str) {
        assert_eq!(response.status, 404, "{path} answered {response:?}");
        assert!(
            !response.text().contains("SECRET"),
            "{path} leaked the secret: {response:?}"
        );
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write fixture file");
}

// ---------------------------------------------------------------- files

#[test]
fn serves_a_file_with_its_content_type_length_and_body() {
    let site = Site::new();
    let r = site.get("/hello.txt");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        r.header("Content-Length"),
        Some(HELLO.len().to_string().as_str())
    );
    assert_eq!(r.text(), HELLO);
    assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
    assert!(r.header("ETag").is_some_and(|e| e.ends_with('"')), "{r:?}");
    assert!(
        r.header("Last-Modified")
            .is_some_and(|d| d.ends_with(" GMT")),
        "{r:?}"
    );

    let html = site.get("/page.html");
    assert_eq!(
        html.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let blob = site.get("/blob.xyz");
    assert_eq!(
        blob.header("Content-Type"),
        Some("application/octet-stream")
    );
    assert_eq!(blob.body, [0, 1, 2, 3, 254, 255]);
}

#[test]
fn decodes_the_path_and_ignores_the_query_string() {
    let site = Site::new();
    assert_eq!(site.get("/with%20space.txt").text(), "spaced\n");
    assert_eq!(site.get("/hello.txt?v=2&x=%2e%2e").text(), HELLO);
    assert_eq!(site.get("/%68ello.txt").text(), HELLO);
}

#[test]
fn head_sends_the_get_head_without_a_body() {
    let site = Site::new();
    let raw = site.exchange_raw(&request(
        "HEAD",
        "/hello.txt",
        &[("Connection", "close")],
        b"",
    ));
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let field = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    assert_eq!(
        field("Content-Length"),
        Some(HELLO.len().to_string()),
        "{head}"
    );
    assert_eq!(
        field("Content-Type").as_deref(),
        Some("text/plain; charset=utf-8"),
        "{head}"
    );
    assert!(field("ETag").is_some(), "{head}");
    assert_eq!(body, "", "HEAD carries no body");
}

#[test]
fn missing_files_are_404() {
    let site = Site::new();
    site.assert_not_found(&site.get("/nope.txt"), "/nope.txt");
    // A file asked for as a directory.
    site.assert_not_found(&site.get("/hello.txt/"), "/hello.txt/");
}

#[test]
fn symlinks_that_stay_inside_the_directory_are_followed() {
    let site = Site::new();
    assert_eq!(site.get("/alias.txt").text(), HELLO);
}

#[test]
fn unreadable_files_are_404() {
    use std::os::unix::fs::PermissionsExt;
    if nix::unistd::geteuid().is_root() {
        // Root reads any file whatever its mode: nothing to check here.
        return;
    }
    let site = Site::new();
    let locked = site.www.join("locked.txt");
    write(&locked, b"locked\n");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    site.assert_not_found(&site.get("/locked.txt"), "/locked.txt");
}

#[test]
fn only_get_and_head_are_allowed() {
    let site = Site::new();
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = site.send(method, "/hello.txt", &[("Content-Length", "0")]);
        assert_eq!(r.status, 405, "{method}: {r:?}");
        assert_eq!(r.header("Allow"), Some("GET, HEAD"), "{method}");
    }
}

// ---------------------------------------------------------------- directories

#[test]
fn a_directory_with_a_slash_serves_its_index_html() {
    let site = Site::new();
    let r = site.get("/docs/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.text(), "<h1>docs</h1>\n");
}

#[test]
fn a_directory_without_a_slash_redirects_to_the_slash_form() {
    let site = Site::new();
    let r = site.get("/docs");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("Location"), Some("/docs/"));
    let r = site.get("/docs?page=2");
    assert_eq!(r.header("Location"), Some("/docs/?page=2"));
}

#[test]
fn a_directory_without_index_html_is_404_not_a_listing() {
    let site = Site::new();
    site.assert_not_found(&site.get("/empty/"), "/empty/");
    site.assert_not_found(&site.get("/a/"), "/a/");
}

// ---------------------------------------------------------------- conditional requests

#[test]
fn if_none_match_with_the_etag_from_a_first_response_is_304() {
    let site = Site::new();
    let first = site.get("/hello.txt");
    let etag = first.header("ETag").expect("an ETag").to_owned();
    let again = site.send("GET", "/hello.txt", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304, "{again:?}");
    assert!(again.body.is_empty());
    assert_eq!(again.header("ETag"), Some(etag.as_str()));

    let changed = site.send("GET", "/hello.txt", &[("If-None-Match", "\"other\"")]);
    assert_eq!(changed.status, 200, "{changed:?}");
    assert_eq!(changed.text(), HELLO);
}

#[test]
fn if_modified_since_the_last_modified_date_is_304() {
    let site = Site::new();
    let first = site.get("/hello.txt");
    let date = first
        .header("Last-Modified")
        .expect("a Last-Modified")
        .to_owned();
    let again = site.send("GET", "/hello.txt", &[("If-Modified-Since", &date)]);
    assert_eq!(again.status, 304, "{again:?}");

    let long_ago = "Sun, 06 Nov 1994 08:49:37 GMT";
    let old = site.send("GET", "/hello.txt", &[("If-Modified-Since", long_ago)]);
    assert_eq!(old.status, 200, "{old:?}");
}

#[test]
fn if_none_match_takes_precedence_over_if_modified_since() {
    let site = Site::new();
    let date = site
        .get("/hello.txt")
        .header("Last-Modified")
        .expect("a Last-Modified")
        .to_owned();
    let r = site.send(
        "GET",
        "/hello.txt",
        &[("If-None-Match", "\"other\""), ("If-Modified-Since", &date)],
    );
    assert_eq!(r.status, 200, "a non-matching If-None-Match wins: {r:?}");
}

// ---------------------------------------------------------------- ranges

#[test]
fn a_byte_range_is_206_with_exactly_those_bytes() {
    let site = Site::new();
    let r = site.send("GET", "/hello.txt", &[("Range", "bytes=2-5")]);
    assert_eq!(r.status, 206, "{r:?}");
    assert_eq!(r.text(), &HELLO[2..=5]);
    assert_eq!(r.header("Content-Length"), Some("4"));
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 2-5/{}", HELLO.len()).as_str())
    );
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
}

#[test]
fn a_suffix_range_is_the_last_bytes() {
    let site = Site::new();
    let r = site.send("GET", "/hello.txt", &[("Range", "bytes=-7")]);
    assert_eq!(r.status, 206, "{r:?}");
    let size = HELLO.len();
    assert_eq!(r.text(), &HELLO[size - 7..]);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes {}-{}/{size}", size - 7, size - 1).as_str())
    );

    let open = site.send("GET", "/hello.txt", &[("Range", "bytes=7-")]);
    assert_eq!(open.status, 206, "{open:?}");
    assert_eq!(open.text(), &HELLO[7..]);
}

#[test]
fn a_range_past_the_end_is_416_with_the_size() {
    let site = Site::new();
    let r = site.send("GET", "/hello.txt", &[("Range", "bytes=1000-")]);
    assert_eq!(r.status, 416, "{r:?}");
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes */{}", HELLO.len()).as_str())
    );
}

#[test]
fn several_ranges_get_the_whole_file() {
    let site = Site::new();
    let r = site.send("GET", "/hello.txt", &[("Range", "bytes=0-1,4-5")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), HELLO);
}

#[test]
fn if_range_serves_the_range_only_for_the_current_etag() {
    let site = Site::new();
    let etag = site
        .get("/hello.txt")
        .header("ETag")
        .expect("an ETag")
        .to_owned();
    let current = site.send(
        "GET",
        "/hello.txt",
        &[("Range", "bytes=0-4"), ("If-Range", &etag)],
    );
    assert_eq!(current.status, 206, "{current:?}");
    assert_eq!(current.text(), &HELLO[..5]);

    let stale = site.send(
        "GET",
        "/hello.txt",
        &[("Range", "bytes=0-4"), ("If-Range", "\"stale\"")],
    );
    assert_eq!(stale.status, 200, "{stale:?}");
    assert_eq!(stale.text(), HELLO);
}

// ---------------------------------------------------------------- no way out of DIR

#[test]
fn dot_dot_segments_are_404() {
    let site = Site::new();
    for path in ["/../etc/passwd", "/../secret", "/a/../../secret", "/a/.."] {
        site.assert_not_found(&site.get(path), path);
    }
}

#[test]
fn percent_encoded_dots_and_slashes_are_404() {
    let site = Site::new();
    for path in [
        "/%2e%2e/etc/passwd",
        "/%2e%2e/secret",
        "/%2E%2E/secret",
        "/.%2e/secret",
        "/..%2fetc%2fpasswd",
        "/..%2fsecret",
        "/a%2f..%2f..%2fsecret",
        "/%2fetc/passwd",
    ] {
        site.assert_not_found(&site.get(path), path);
    }
}

#[test]
fn double_encoded_dots_are_404() {
    let site = Site::new();
    for path in ["/%252e%252e/secret", "/%252e%252e%252fsecret"] {
        site.assert_not_found(&site.get(path), path);
    }
}

#[test]
fn backslashes_and_nul_are_404() {
    let site = Site::new();
    for path in [
        "/..\\secret",
        "/..%5csecret",
        "/a%5c..%5c..%5csecret",
        "/hello.txt%00",
    ] {
        site.assert_not_found(&site.get(path), path);
    }
}

#[test]
fn symlinks_that_resolve_outside_the_directory_are_404() {
    let site = Site::new();
    for path in [
        "/escape",
        "/escape-abs",
        "/escape-dir/secret",
        "/escape-dir/",
    ] {
        site.assert_not_found(&site.get(path), path);
    }
}

#[test]
fn an_absolute_form_target_cannot_step_outside_either() {
    let site = Site::new();
    let path = "http://127.0.0.1/../secret";
    site.assert_not_found(&site.get(path), path);
    assert_eq!(site.get("http://127.0.0.1/hello.txt").text(), HELLO);
}

// ---------------------------------------------------------------- dotfiles (issue 12)

const DOTFILES: [(&str, &str); 3] = [
    ("/.env", "dotenv-value"),
    ("/.git/config", "dot-git-value"),
    ("/docs/.hidden", "hidden-value"),
];

#[test]
fn dotfiles_and_dot_directories_are_404_by_default() {
    let site = Site::new();
    for (path, content) in DOTFILES
        .iter()
        .chain(&[("/.git/", ""), ("/%2egit/config", "")])
    {
        let response = site.get(path);
        assert_eq!(response.status, 404, "{path} answered {response:?}");
        assert!(
            content.is_empty() || !response.text().contains(content),
            "{path} leaked: {response:?}"
        );
    }
    assert_eq!(
        site.get("/hello.txt").text(),
        HELLO,
        "plain names still serve"
    );
}

#[test]
fn static_dotfiles_serves_dotfiles_and_dot_directories() {
    let site = Site::with_flags(&["--static-dotfiles"]);
    for (path, content) in DOTFILES {
        let response = site.get(path);
        assert_eq!(response.status, 200, "{path} answered {response:?}");
        assert!(response.text().contains(content), "{path}: {response:?}");
    }
    // Still nothing outside DIR.
    site.assert_not_found(&site.get("/escape"), "/escape");
}

// ---------------------------------------------------------------- symlink swaps (issue 12)

const SAFE: &str = "safe content inside the directory\n";
/// Requests made while the swapper runs, and the longest the loop may run.
const SWAP_REQUESTS: usize = 500;
const SWAP_BUDGET: Duration = Duration::from_secs(2);

/// Swaps `www/NAME` and `base/NAME.other` with one atomic `RENAME_EXCHANGE`
/// after another, until dropped; the number of swaps made.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Swapper {
    fn start(a: PathBuf, b: PathBuf) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut swaps = 0;
                while !stop.load(Ordering::Relaxed) {
                    renameat2(AT_FDCWD, &a, AT_FDCWD, &b, RenameFlags::RENAME_EXCHANGE)
                        .expect("exchange the two names");
                    swaps += 1;
                }
                swaps
            })
        };
        Swapper {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("swapper thread"))
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// GETs `path` until SWAP_REQUESTS or SWAP_BUDGET; every answer must be the
/// safe content or a 404, never the secret; (safe answers, 404s).
fn hammer(site: &Site, path: &str, outside: &[&str]) -> (usize, usize) {
    let started = Instant::now();
    let (mut safe, mut missing) = (0, 0);
    for _ in 0..SWAP_REQUESTS {
        if started.elapsed() > SWAP_BUDGET {
            break;
        }
        let response = site.get(path);
        let text = response.text();
        for leak in outside {
            assert!(
                !text.contains(leak),
                "{path} served outside content: {text:?}"
            );
        }
        match response.status {
            200 => {
                assert_eq!(text, SAFE, "{path}");
                safe += 1;
            }
            404 => missing += 1,
            other => panic!("{path} answered {other}: {text:?}"),
        }
    }
    (safe, missing)
}

#[test]
fn a_file_swapped_for_a_symlink_out_in_a_loop_never_serves_the_outside() {
    let site = Site::new();
    // www/swap is a regular file or a symlink to the secret, and
    // base/swap.other the other one; the swapper exchanges them.
    write(&site.www.join("swap"), SAFE.as_bytes());
    std::os::unix::fs::symlink(site.base.join("secret"), site.base.join("swap.other"))
        .expect("symlink to the secret");
    let swapper = Swapper::start(site.www.join("swap"), site.base.join("swap.other"));
    let (safe, missing) = hammer(&site, "/swap", &["SECRET"]);
    let swaps = swapper.stop();
    assert!(swaps > 100, "the swapper ran ({swaps} swaps)");
    assert!(
        safe > 0,
        "the file was served at times ({safe} served, {missing} 404)"
    );
    assert!(
        missing > 0,
        "the symlink was refused at times ({safe} served, {missing} 404)"
    );
}

#[test]
fn a_symlink_to_etc_swapped_in_a_loop_never_serves_the_outside() {
    let site = Site::new();
    // www/swap is a regular file or a symlink to /etc/passwd.
    write(&site.www.join("swap"), SAFE.as_bytes());
    std::os::unix::fs::symlink("/etc/passwd", site.base.join("swap.other"))
        .expect("symlink to /etc/passwd");
    let swapper = Swapper::start(site.www.join("swap"), site.base.join("swap.other"));
    let (safe, missing) = hammer(&site, "/swap", &["root:"]);
    let swaps = swapper.stop();
    assert!(swaps > 100, "the swapper ran ({swaps} swaps)");
    assert!(safe > 0 && missing > 0, "{safe} served, {missing} 404");
}

#[test]
fn a_directory_swapped_for_a_symlink_out_in_a_loop_never_serves_the_outside() {
    let site = Site::new();
    // www/d is a directory holding a safe `secret`, or a symlink to `..`
    // (BASE, whose `secret` is the real one): the classic race between a
    // check of the path and the open, in a component on the way.
    std::fs::create_dir(site.www.join("d")).expect("create www/d");
    write(&site.www.join("d/secret"), SAFE.as_bytes());
    std::os::unix::fs::symlink("..", site.base.join("d.other")).expect("symlink to ..");
    let swapper = Swapper::start(site.www.join("d"), site.base.join("d.other"));
    let (safe, missing) = hammer(&site, "/d/secret", &["SECRET"]);
    let swaps = swapper.stop();
    assert!(swaps > 100, "the swapper ran ({swaps} swaps)");
    assert!(safe > 0 && missing > 0, "{safe} served, {missing} 404");
}
