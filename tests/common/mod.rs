//! What the integration tests need to drive a real forkhorn: start it, read
//! its logs, find its processes in /proc, signal them, and speak HTTP/1.1 to
//! it over a raw `TcpStream`.
//!
//! Every server started here gets its own worker tmp dir; that path is on the
//! command line of the master and of every worker (forked, so same argv),
//! which is how a test finds "its" processes and how `Drop` kills exactly
//! those and nothing else.

// Shared by several test binaries; each uses a subset.
#![allow(dead_code)]

pub mod corpus;
pub mod python;
pub mod sse;
pub mod tls;

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long anything that "eventually" happens may take on a loaded machine.
pub const EVENTUALLY: Duration = Duration::from_secs(10);
/// How often a waiting test looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How long the client waits for any one read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The User-Agent every request here sends (the access log shows it).
pub const USER_AGENT: &str = "forkhorn-tests/1";

pub const BIN: &str = env!("CARGO_BIN_EXE_forkhorn");

// ---------------------------------------------------------------- waiting

/// Poll `cond` every `POLL_INTERVAL` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Read from `reader` until the server ends the connection (end of stream,
/// a reset, a TLS stream ended without close_notify) or `timeout` passes:
/// what arrived, and whether it ended. `socket_of` finds the socket under
/// `reader`, whose read timeout bounds each read.
pub fn read_until_closed<R: Read>(
    reader: &mut R,
    socket_of: impl Fn(&R) -> &TcpStream,
    timeout: Duration,
) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (bytes, false);
        }
        socket_of(reader)
            .set_read_timeout(Some(left))
            .expect("set read timeout");
        match reader.read(&mut buf) {
            Ok(0) => return (bytes, true),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (bytes, false);
            }
            Err(_) => return (bytes, true),
        }
    }
}

/// Sockets open in process `pid` (listeners and connections).
pub fn open_sockets(pid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// A fresh, empty directory for one test.
pub fn fresh_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("forkhorn-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a tmp dir for the test");
    dir
}

// ---------------------------------------------------------------- lines

/// Lines a pipe produced so far, filled by a reader thread.
#[derive(Clone, Default)]
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    /// The pipe reached its end (every process holding it has gone): no
    /// more lines will come.
    ended: Arc<AtomicBool>,
}

impl Lines {
    pub fn collect_from(pipe: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().expect("lines lock").push(line);
            }
            sink.ended.store(true, Ordering::SeqCst);
        });
        lines
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// Whether the pipe has ended, so `snapshot` is all there will be.
    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.snapshot().iter().any(|l| l.contains(needle))
    }

    /// The first line satisfying `pred`, waiting up to `timeout` for it.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.snapshot().into_iter().find(|l| pred(l));
            found.is_some()
        });
        found
    }

    /// Wait until at least `n` lines arrived.
    pub fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.snapshot().len() >= n)
    }
}

impl fmt::Display for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.snapshot() {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- /proc

/// What /proc says about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: i32,
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ppid ...`; comm may hold spaces and parentheses.
    let rest = &raw[raw.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(ProcStat { state, ppid })
}

/// Running (or sleeping, or stopped), not dead and not a zombie.
pub fn is_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X'))
}

fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live children of `parent`.
pub fn children_of(parent: i32) -> BTreeSet<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            proc_stat(pid).is_some_and(|s| s.ppid == parent && !matches!(s.state, 'Z' | 'X'))
        })
        .collect()
}

/// Live processes with `arg` as one of their command-line arguments.
pub fn processes_with_arg(arg: &str) -> BTreeSet<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes()) && is_alive(pid)
        })
        .collect()
}

/// Whether `pid` is blocked in a sleep syscall (a chaos `/sleep` in flight).
pub fn is_in_sleep_syscall(pid: i32) -> bool {
    let Ok(raw) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    let nr: Option<i64> = raw.split_whitespace().next().and_then(|n| n.parse().ok());
    nr == Some(libc::SYS_nanosleep) || nr == Some(libc::SYS_clock_nanosleep)
}

pub fn signal(pid: i32, sig: Signal) {
    // ESRCH (already gone) is fine for every caller here.
    let _ = kill(Pid::from_raw(pid), sig);
}

// ---------------------------------------------------------------- server

/// A running forkhorn master, killed with all its processes on drop.
pub struct Server {
    child: Child,
    pub master: i32,
    pub port: u16,
    /// The error log (stderr).
    pub log: Lines,
    /// stdout (the access log with `--access-logfile -`).
    pub stdout: Lines,
    pub tmp_dir: PathBuf,
    exit: Option<ExitStatus>,
}

impl Server {
    /// Start `forkhorn ARGS -b 127.0.0.1:0 --worker-tmp-dir <fresh dir>` and
    /// wait until it is listening.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// `start` with extra environment variables for the master.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BIN);
        command.envs(env.iter().copied());
        Server::start_command(command, args, None)
    }

    /// The command-line argument that marks this server's processes.
    fn marker(&self) -> String {
        self.tmp_dir.to_str().expect("utf-8 tmp dir").to_owned()
    }

    /// Live worker processes (children of the master).
    pub fn workers(&self) -> BTreeSet<i32> {
        children_of(self.master)
    }

    /// Every live process of this server: the master and its workers, and
    /// any worker that outlived the master.
    pub fn processes(&self) -> BTreeSet<i32> {
        processes_with_arg(&self.marker())
    }

    /// Whether worker `pid` logged that it booted (it is serving).
    pub fn has_booted(&self, pid: i32) -> bool {
        self.log
            .contains(&format!("Booting worker with pid: {pid}"))
    }

    /// Wait until exactly `n` workers run and all of them have booted; their pids.
    pub fn wait_for_workers(&self, n: usize) -> BTreeSet<i32> {
        let mut workers = BTreeSet::new();
        let ok = wait_until(EVENTUALLY, || {
            workers = self.workers();
            workers.len() == n && workers.iter().all(|&w| self.has_booted(w))
        });
        assert!(
            ok,
            "expected {n} booted workers, have {workers:?}; log:\n{}",
            self.log
        );
        workers
    }

    /// Wait until some worker is inside a chaos `/sleep`; its pid.
    pub fn wait_for_sleeping_worker(&self) -> i32 {
        let mut sleeper = None;
        let ok = wait_until(EVENTUALLY, || {
            sleeper = self.workers().into_iter().find(|&w| is_in_sleep_syscall(w));
            sleeper.is_some()
        });
        assert!(
            ok,
            "no worker started the /sleep request; log:\n{}",
            self.log
        );
        sleeper.expect("checked above")
    }

    pub fn signal(&self, sig: Signal) {
        signal(self.master, sig);
    }

    /// The master's exit status, waiting up to `timeout` for it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit {
                return Some(status);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn get(&self, path: &str) -> io::Result<Response> {
        get(self.port, path)
    }

    pub fn connect(&self) -> io::Result<Client> {
        Client::connect(self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Workers first, while they can still be found as the master's
        // children, then the master, then anything left with our marker.
        for pid in self.workers() {
            signal(pid, Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.processes() {
            signal(pid, Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.tmp_dir);
    }
}

/// A forkhorn run that is expected to end by itself (bad flags and the like).
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// Spawn `command` (no WEB_CONCURRENCY, no stdin) with its stderr and
/// stdout collected line by line: (child, stderr, stdout).
fn spawn_collecting(mut command: Command) -> (Child, Lines, Lines) {
    let mut child = command
        .env_remove("WEB_CONCURRENCY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forkhorn");
    let stderr = Lines::collect_from(child.stderr.take().expect("piped stderr"));
    let stdout = Lines::collect_from(child.stdout.take().expect("piped stdout"));
    (child, stderr, stdout)
}

/// Run `forkhorn ARGS` to completion; kills it and panics after `timeout`.
pub fn run_to_exit(args: &[&str], timeout: Duration) -> Finished {
    let mut command = Command::new(BIN);
    command.args(args);
    let (mut child, stderr, stdout) = spawn_collecting(command);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let pid = i32::try_from(child.id()).expect("pid fits in i32");
            for w in children_of(pid) {
                signal(w, Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("forkhorn {args:?} still running after {timeout:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    // The pipes end when the process (and any child holding them) is gone;
    // wait for the reader threads to take the last lines.
    wait_until(EVENTUALLY, || stderr.has_ended() && stdout.has_ended());
    Finished {
        status,
        stdout: stdout.snapshot(),
        stderr: stderr.snapshot(),
    }
}

// ---------------------------------------------------------------- HTTP

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The pid a chaos route answered with.
    pub fn pid(&self) -> i32 {
        self.text()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a pid: {:?}", self.text()))
    }
}

/// One request with `Connection: close` on a new connection.
pub fn get(port: u16, path: &str) -> io::Result<Response> {
    let mut client = Client::connect(port)?;
    client.send(&request("GET", path, &[("Connection", "close")], b""))?;
    client.read_response()
}

/// The bytes of an HTTP/1.1 request with Host and User-Agent added.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {USER_AGENT}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A client connection that can carry several requests (keep-alive, pipelining).
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(port: u16) -> io::Result<Client> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// A keep-alive GET on this connection.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(&request("GET", path, &[], b""))?;
        self.read_response()
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        self.reader.get_ref().shutdown(Shutdown::Write)
    }

    /// Whether the server closed the connection: the next read finds end of
    /// stream (or a reset) with no more bytes, within the read timeout.
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    /// Read one response (an interim 1xx counts as one).
    pub fn read_response(&mut self) -> io::Result<Response> {
        read_response(&mut self.reader)
    }
}

/// Read one response (an interim 1xx counts as one) from `reader`, plain or
/// TLS.
pub fn read_response(reader: &mut impl BufRead) -> io::Result<Response> {
    let status_line = read_line(reader)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_owned();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("bad status line {status_line:?}")));
    }
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut response = Response {
        version,
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = response
        .header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = response.header("Content-Length").map(str::parse::<usize>);
    let has_body = !((100..200).contains(&status) || status == 204 || status == 304);
    response.body = match (has_body, chunked, length) {
        (false, _, _) => Vec::new(),
        (true, true, _) => read_chunked(reader)?,
        (true, false, Some(length)) => {
            let length = length.map_err(|_| bad("bad Content-Length".to_owned()))?;
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body)?;
            body
        }
        (true, false, None) => {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            body
        }
    };
    Ok(response)
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailer fields, up to the blank line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.is_empty() {
            return Err(bad("chunk data not followed by CRLF".to_owned()));
        }
    }
}

/// One line without its CRLF; end of stream is an error.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = reader.read_until(b'\n', &mut line)?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed in the middle of a response",
        ));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| bad("non-UTF-8 line in a response".to_owned()))
}

/// An error for bytes that are not what HTTP (or the test) expects.
pub fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The pidfile path and other files a test owns, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempFile(
            std::env::temp_dir().join(format!("forkhorn-test-{}-{n}-{name}", std::process::id())),
        )
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A thread issuing requests back to back, each on a new connection,
/// recording every outcome, until stopped. `T` is what a 200 is kept as.
pub struct RequestLoop<T = i32> {
    stop: Arc<std::sync::atomic::AtomicBool>,
    outcomes: Arc<Mutex<Outcomes<T>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a `RequestLoop` saw.
#[derive(Debug, Clone)]
pub struct Outcomes<T = i32> {
    /// What each 200 response was kept as (chaos `/pid`: the pid), in order.
    pub served_by: Vec<T>,
    /// Every error or non-200 response, described.
    pub failures: Vec<String>,
}

impl<T> Default for Outcomes<T> {
    fn default() -> Outcomes<T> {
        Outcomes {
            served_by: Vec::new(),
            failures: Vec::new(),
        }
    }
}

impl RequestLoop<i32> {
    /// `GET path` (a chaos route that answers its pid) over plain HTTP.
    pub fn start(port: u16, path: &'static str) -> RequestLoop<i32> {
        RequestLoop::start_with(move || {
            get(port, path).map(|r| {
                let pid = if r.status == 200 { r.pid() } else { 0 };
                (r, pid)
            })
        })
    }
}

impl<T: Clone + Send + 'static> RequestLoop<T> {
    /// Run `fetch` back to back: one request, and what to keep of a 200.
    pub fn start_with<F>(mut fetch: F) -> RequestLoop<T>
    where
        F: FnMut() -> io::Result<(Response, T)> + Send + 'static,
    {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let thread = {
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = fetch();
                    let mut o = outcomes.lock().expect("outcomes lock");
                    match result {
                        Ok((r, kept)) if r.status == 200 => o.served_by.push(kept),
                        Ok((r, _)) => o.failures.push(format!(
                            "status {} after {:?}: {:?}",
                            r.status,
                            started.elapsed(),
                            r.text()
                        )),
                        Err(e) => o
                            .failures
                            .push(format!("{e} after {:?}", started.elapsed())),
                    }
                }
            })
        };
        RequestLoop {
            stop,
            outcomes,
            thread: Some(thread),
        }
    }

    pub fn outcomes(&self) -> Outcomes<T> {
        self.outcomes.lock().expect("outcomes lock").clone()
    }

    /// Wait until `n` more requests than now have been served.
    pub fn wait_for_more_served(&self, n: usize, timeout: Duration) -> bool {
        let start = self.outcomes().served_by.len();
        wait_until(timeout, || self.outcomes().served_by.len() >= start + n)
    }

    /// Stop after the request in flight and return everything seen.
    pub fn finish(mut self) -> Outcomes<T> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("request loop thread");
        }
        self.outcomes()
    }
}

impl<T> Drop for RequestLoop<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------- added for wire and slow-client tests

impl Client {
    /// A second handle on this connection's socket, so another thread can
    /// write while this one reads responses (deep pipelining).
    pub fn try_clone_stream(&self) -> io::Result<TcpStream> {
        self.reader.get_ref().try_clone()
    }
}

// ---------------------------------------------------------------- control socket and metrics endpoint

/// What one `forkhorn ctl` run printed, and how it exited.
#[derive(Debug)]
pub struct CtlRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `forkhorn ctl --socket SOCKET WORDS...` to completion. Bounded by the
/// client itself: it gives up after 10 s without an answer.
pub fn ctl(socket: &Path, words: &[&str]) -> CtlRun {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(words)
        .stdin(Stdio::null())
        .output()
        .expect("spawn forkhorn ctl");
    CtlRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `forkhorn ctl --socket SOCKET WORDS... --json`: the master's answer,
/// which must be `{"ok":true,...}` with exit status 0.
pub fn ctl_json(socket: &Path, words: &[&str]) -> serde_json::Value {
    let mut with_json = words.to_vec();
    with_json.push("--json");
    let run = ctl(socket, &with_json);
    assert!(
        run.status.success(),
        "forkhorn ctl {words:?} failed ({}): {}{}",
        run.status,
        run.stdout,
        run.stderr
    );
    let answer: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("ctl {words:?} printed no JSON ({e}): {:?}", run.stdout));
    assert_eq!(answer["ok"], true, "ctl {words:?} answered {answer}");
    answer
}

/// The port in the master's `Metrics at: http://127.0.0.1:PORT/metrics (PID)`
/// line (started with `--metrics-bind 127.0.0.1:0`).
pub fn metrics_port(log: &Lines) -> u16 {
    let marker = "Metrics at: http://127.0.0.1:";
    let line = log
        .wait_for(EVENTUALLY, |l| l.contains(marker))
        .unwrap_or_else(|| panic!("no `{marker}` line; log:\n{log}"));
    let after = &line[line.find(marker).expect("marker in line") + marker.len()..];
    let port = after.split('/').next().unwrap_or_default();
    port.parse()
        .unwrap_or_else(|_| panic!("no port in {line:?}"))
}

// ---------------------------------------------------------------- added for fault-injection tests

impl Server {
    /// Like `start`, but run `command` (the forkhorn binary, or a wrapper
    /// such as `unshare ... BIN`, with limits set in `pre_exec`) with `args`
    /// and the usual `-b 127.0.0.1:0 --worker-tmp-dir <fresh dir>`. With
    /// `error_log` the `Listening at` line is looked for in that file
    /// instead of on stderr (`--error-logfile`).
    pub fn start_command(mut command: Command, args: &[&str], error_log: Option<&Path>) -> Server {
        command.args(args).args(["-b", "127.0.0.1:0"]);
        let mut server = Server::spawn(command);
        let marker = "Listening at: http://127.0.0.1:";
        let mut line = None;
        wait_until(EVENTUALLY, || {
            line = match error_log {
                Some(path) => std::fs::read_to_string(path)
                    .unwrap_or_default()
                    .lines()
                    .find(|l| l.contains(marker))
                    .map(str::to_owned),
                None => server
                    .log
                    .snapshot()
                    .into_iter()
                    .find(|l| l.contains(marker)),
            };
            line.is_some()
        });
        let Some(line) = line else {
            let exit = server.child.try_wait();
            panic!(
                "forkhorn {args:?} did not report listening ({exit:?}); stderr:\n{}",
                server.log
            );
        };
        let after = &line[line.find(marker).expect("marker in line") + marker.len()..];
        let (port, rest) = after
            .split_once(' ')
            .expect("`PORT (PID)` after the marker");
        server.port = port.parse().expect("a port number");
        assert_eq!(
            rest,
            format!("({})", server.master),
            "the listening line names the master pid"
        );
        server
    }

    /// USR2: wait for this master to hand over to a new one and exit 0;
    /// the new master's pid, from `pidfile`.
    pub fn upgrade(&mut self, pidfile: &Path) -> i32 {
        let old = self.master;
        self.signal(Signal::SIGUSR2);
        let status = self.wait_exit(EVENTUALLY);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "the old master hands over and exits 0; log:\n{}",
            self.log
        );
        let new = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .expect("the pidfile names a master");
        assert_ne!(new, old, "a new master");
        new
    }

    /// Run `command` with a fresh `--worker-tmp-dir`, its output collected;
    /// `port` is left for the caller to find.
    pub fn spawn(mut command: Command) -> Server {
        let tmp_dir = fresh_dir();
        command.arg("--worker-tmp-dir").arg(&tmp_dir);
        let (child, log, stdout) = spawn_collecting(command);
        let master = i32::try_from(child.id()).expect("pid fits in i32");
        Server {
            child,
            master,
            port: 0,
            log,
            stdout,
            tmp_dir,
            exit: None,
        }
    }

    /// The names in the worker tmp dir (empty if the dir is gone).
    pub fn tmp_dir_entries(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.tmp_dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Children of the master that are zombies (exited, not yet reaped).
    pub fn zombie_workers(&self) -> BTreeSet<i32> {
        zombie_children_of(self.master)
    }
}

/// Children of `parent` in state Z: exited but not reaped.
pub fn zombie_children_of(parent: i32) -> BTreeSet<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| proc_stat(pid).is_some_and(|s| s.ppid == parent && s.state == 'Z'))
        .collect()
}

/// CPU time (user + system) `pid` has used so far; None once it is gone.
pub fn cpu_time(pid: i32) -> Option<Duration> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After `pid (comm)`: state is field 3, utime field 14, stime field 15.
    let rest = &raw[raw.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_sec = u64::try_from(ticks_per_sec).ok().filter(|&t| t > 0)?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / ticks_per_sec,
    ))
}

/// How many descriptors `pid` has open (/proc/PID/fd).
pub fn open_fd_count(pid: i32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Resident memory of `pid` in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

impl Lines {
    /// How many lines so far satisfy `pred` (without copying them).
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines
            .lock()
            .expect("lines lock")
            .iter()
            .filter(|l| pred(l))
            .count()
    }
}
