//! The control socket: `forkhorn ctl` on one side, the master on the other.
//!
//! One JSON object per line each way. The master answers from its poll loop
//! (see `oneshot`); this module parses commands, renders replies from a
//! `Snapshot`, and is also the `forkhorn ctl` client.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::master::stats::{Reason, Snapshot};

/// A command the master carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `status`: master, listeners, worker count and totals ([`status`]).
    Status,
    /// `workers`: one row per live worker ([`workers`]).
    Workers,
    /// `stats`: request counts by status class and restarts by reason ([`stats`]).
    Stats,
    /// `reload`: as SIGHUP; new workers start, then the old ones finish.
    Reload,
    /// `reopen`: as SIGUSR1; reopen the log files (after rotation).
    Reopen,
    /// `worker add [N]`: as N TTINs; raise the wanted worker count by N (default 1).
    AddWorkers(usize),
    /// `worker remove [N]`: as N TTOUs; lower it by N, never below one.
    RemoveWorkers(usize),
    /// Gracefully stop the worker with this pid (it is replaced).
    KillWorker(i32),
    /// `shutdown [graceful|quick]`: stop the server, as TERM or INT.
    Shutdown {
        /// Let workers finish their requests (up to `--graceful-timeout`);
        /// false for `quick`.
        graceful: bool,
    },
}

/// Parse `["worker", "add", "2"]`-style words (what `forkhorn ctl` takes).
pub fn parse_words(words: &[String]) -> Result<Command, String> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let count = |s: Option<&&str>| -> Result<usize, String> {
        match s {
            None => Ok(1),
            Some(n) => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "{n:?} is not a worker count (a whole number, 1 or more)"
                )),
            },
        }
    };
    Ok(match w.as_slice() {
        ["status"] => Command::Status,
        ["workers"] => Command::Workers,
        ["stats"] => Command::Stats,
        ["reload"] => Command::Reload,
        ["reopen"] => Command::Reopen,
        ["worker", "add", rest @ ..] if rest.len() <= 1 => {
            Command::AddWorkers(count(rest.first())?)
        }
        ["worker", "remove", rest @ ..] if rest.len() <= 1 => {
            Command::RemoveWorkers(count(rest.first())?)
        }
        ["worker", "kill", pid] => {
            Command::KillWorker(pid.parse().map_err(|_| format!("{pid:?} is not a pid"))?)
        }
        ["shutdown"] | ["shutdown", "graceful"] => Command::Shutdown { graceful: true },
        ["shutdown", "quick"] => Command::Shutdown { graceful: false },
        _ => {
            return Err(format!(
                "unknown command {:?}; use status, workers, stats, reload, reopen, worker add [N], worker remove [N], worker kill PID, shutdown [graceful|quick]",
                w.join(" ")
            ));
        }
    })
}

/// A request line: `{"command": ["worker", "add", "2"]}`.
pub fn parse_request(line: &[u8]) -> Result<Command, String> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON request: {e}"))?;
    let words: Vec<String> = value
        .get("command")
        .and_then(Value::as_array)
        .ok_or("the request needs a \"command\" array")?
        .iter()
        .map(|w| {
            w.as_str()
                .map(str::to_owned)
                .ok_or("command words must be strings")
        })
        .collect::<Result<_, _>>()?;
    parse_words(&words)
}

/// A line ends a control request.
pub fn framing(input: &[u8]) -> Option<usize> {
    input.iter().position(|&b| b == b'\n').map(|i| i + 1)
}

/// Bind the control socket at `path`, mode 0600.
pub fn bind(path: &Path, replace_live: bool) -> std::io::Result<Socket> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let is_stale = !replace_live && is_stale_socket(path)?;
            std::fs::remove_file(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot remove the old control socket {}: {e}",
                        path.display()
                    ),
                )
            })?;
            if is_stale {
                log::warn!(
                    "replaced a stale control socket at {} (a previous forkhorn was killed)",
                    path.display()
                );
            }
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "control socket path {} exists and is not a socket; remove it or pick another --control-socket",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot check control socket {}: {e}", path.display()),
            ));
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.bind(&SockAddr::unix(path)?).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot create control socket {}: {e}", path.display()),
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    socket.listen(16)?;
    Ok(socket)
}

/// A success reply: `{"ok": true, "message": ...}`.
pub fn ok(message: impl Into<String>) -> Value {
    json!({"ok": true, "message": message.into()})
}

/// A failure reply: `{"ok": false, "error": ...}`; `forkhorn ctl` prints
/// the error and exits non-zero.
pub fn error(message: impl Into<String>) -> Value {
    json!({"ok": false, "error": message.into()})
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The `status` reply. Durations are in seconds (`_s` keys), to the
/// millisecond; a disabled timeout is `null`.
pub fn status(s: &Snapshot) -> Value {
    json!({
        "ok": true,
        "master_pid": s.master_pid,
        "uptime_s": secs(s.uptime),
        "listeners": s.listeners,
        "app": s.app,
        "workers": s.workers.len(),
        "workers_wanted": s.wanted,
        "stopping": s.is_stopping,
        "config": {
            "timeout_s": s.timeout.map(secs),
            "graceful_timeout_s": secs(s.graceful_timeout),
            "max_requests": s.max_requests,
            "max_requests_jitter": s.max_requests_jitter,
        },
        "totals": {
            "requests": s.totals.requests,
            "bytes_out": s.totals.bytes_out,
            "restarts": s.restarts.values().sum::<u64>(),
        },
    })
}

/// The `workers` reply: one object per live worker, with the request in
/// flight (or `null`) and memory from /proc (`null` when unreadable).
pub fn workers(s: &Snapshot) -> Value {
    let rows: Vec<Value> = s
        .workers
        .iter()
        .map(|w| {
            json!({
                "id": w.id,
                "pid": w.pid,
                "state": w.state.as_str(),
                "age_s": secs(w.age),
                "requests": w.requests,
                "request": w.request.as_ref().map(|r| json!({
                    "method": r.method,
                    "target": r.target,
                    "peer": r.peer,
                    "elapsed_s": secs(r.elapsed),
                })),
                "rss_bytes": w.rss_bytes,
                "private_bytes": w.private_bytes,
                "last_heartbeat_s": secs(w.since_beat),
            })
        })
        .collect();
    json!({"ok": true, "workers": rows})
}

/// The `stats` reply: totals over every worker, living and dead. Every
/// restart reason is listed, zero included, so the keys are stable.
pub fn stats(s: &Snapshot) -> Value {
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    let by_class: serde_json::Map<String, Value> = classes
        .iter()
        .zip(s.totals.status_classes)
        .map(|(c, n)| ((*c).to_owned(), json!(n)))
        .collect();
    let restarts: serde_json::Map<String, Value> = Reason::RESTARTS
        .iter()
        .map(|r| {
            (
                r.as_str().to_owned(),
                json!(s.restarts.get(r).copied().unwrap_or(0)),
            )
        })
        .collect();
    json!({
        "ok": true,
        "requests": s.totals.requests,
        "requests_by_status": by_class,
        "bytes_out": s.totals.bytes_out,
        "worker_restarts": restarts,
    })
}

// ---- the client: `forkhorn ctl` ----

/// `forkhorn ctl [--socket PATH] COMMAND... [--json]`
#[derive(clap::Parser, Debug)]
#[command(
    name = "forkhorn ctl",
    bin_name = "forkhorn ctl",
    about = "Ask a running forkhorn master about its workers, or steer it."
)]
pub struct CtlArgs {
    /// The master's control socket [default: forkhorn.ctl in $XDG_RUNTIME_DIR, else in /dev/shm or the temp dir].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the raw JSON answer.
    #[arg(long)]
    pub json: bool,
    /// status | workers | stats | reload | reopen | worker add [N] | worker remove [N] | worker kill PID | shutdown [graceful|quick]
    #[arg(required = true, num_args = 1..)]
    pub command: Vec<String>,
}

fn default_socket() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
    {
        return dir.join("forkhorn.ctl");
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join("forkhorn.ctl")
    } else {
        std::env::temp_dir().join("forkhorn.ctl")
    }
}

/// Whether the socket file at `path` is a leftover (nobody accepts on it,
/// so its forkhorn was killed) rather than a running forkhorn's, which is
/// never taken over.
fn is_stale_socket(path: &Path) -> std::io::Result<bool> {
    match UnixStream::connect(path) {
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "control socket {} belongs to a running forkhorn; stop that one first, or give this one another --control-socket (or --no-control-socket)",
                path.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(true),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!(
                "cannot tell whether control socket {} is still in use: {e}; remove it if no forkhorn runs, or pick another --control-socket",
                path.display()
            ),
        )),
    }
}

/// Send one command and return the parsed answer.
pub fn request(socket: &Path, words: &[String]) -> Result<Value, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the control socket {}: {e} (is forkhorn running? pass --socket PATH)",
            socket.display()
        )
    })?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let line = json!({"command": words}).to_string() + "\n";
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("cannot send to {}: {e}", socket.display()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| format!("no answer from {}: {e}", socket.display()))?;
    serde_json::from_str(&answer).map_err(|e| format!("bad answer from {}: {e}", socket.display()))
}

/// Run `forkhorn ctl`; returns the exit status.
pub fn main(args: &CtlArgs) -> i32 {
    if let Err(e) = parse_words(&args.command) {
        eprintln!("forkhorn ctl: {e}");
        return 2;
    }
    let socket = args.socket.clone().unwrap_or_else(default_socket);
    let answer = match request(&socket, &args.command) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("forkhorn ctl: {e}");
            return 1;
        }
    };
    let ok = answer.get("ok").and_then(Value::as_bool).unwrap_or(false);
    if args.json {
        println!("{answer}");
    } else if !ok {
        eprintln!(
            "forkhorn ctl: {}",
            answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the master refused the command")
        );
    } else {
        print!("{}", render_human(&args.command, &answer));
    }
    if ok { 0 } else { 1 }
}

/// An aligned table (workers) or `key: value` lines (everything else).
fn render_human(words: &[String], answer: &Value) -> String {
    if words.first().map(String::as_str) == Some("workers") {
        let mut rows = vec![vec![
            "ID".to_owned(),
            "PID".to_owned(),
            "STATE".to_owned(),
            "AGE".to_owned(),
            "REQS".to_owned(),
            "RSS".to_owned(),
            "BEAT".to_owned(),
            "REQUEST".to_owned(),
        ]];
        for w in answer
            .get("workers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = |k: &str| {
                w.get(k)
                    .map(|v| v.to_string().trim_matches('"').to_owned())
                    .unwrap_or_default()
            };
            let rss = w
                .get("rss_bytes")
                .and_then(Value::as_u64)
                .map_or("-".to_owned(), |b| format!("{:.1}M", b as f64 / 1048576.0));
            let request = w
                .get("request")
                .filter(|r| !r.is_null())
                .map_or("-".to_owned(), |r| {
                    format!(
                        "{} {} from {} ({}s)",
                        r["method"].as_str().unwrap_or(""),
                        r["target"].as_str().unwrap_or(""),
                        r["peer"].as_str().unwrap_or(""),
                        r["elapsed_s"]
                    )
                });
            rows.push(vec![
                field("id"),
                field("pid"),
                field("state"),
                format!("{}s", field("age_s")),
                field("requests"),
                rss,
                format!("{}s", field("last_heartbeat_s")),
                request,
            ]);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        return rows
            .iter()
            .map(|r| {
                let cells: Vec<String> = r
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                cells.join("  ").trim_end().to_owned() + "\n"
            })
            .collect();
    }
    let mut out = String::new();
    flatten(answer, "", &mut out);
    out
}

fn flatten(v: &Value, prefix: &str, out: &mut String) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "ok" {
                    continue;
                }
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &key, out);
            }
        }
        Value::String(s) => out.push_str(&format!("{prefix}: {s}\n")),
        other => out.push_str(&format!("{prefix}: {other}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(
            parse_words(&words("worker add")),
            Ok(Command::AddWorkers(1))
        );
        assert_eq!(
            parse_words(&words("worker add 3")),
            Ok(Command::AddWorkers(3))
        );
        assert_eq!(
            parse_words(&words("worker remove 2")),
            Ok(Command::RemoveWorkers(2))
        );
        assert_eq!(
            parse_words(&words("worker kill 42")),
            Ok(Command::KillWorker(42))
        );
        assert_eq!(
            parse_words(&words("shutdown")),
            Ok(Command::Shutdown { graceful: true })
        );
        assert_eq!(
            parse_words(&words("shutdown quick")),
            Ok(Command::Shutdown { graceful: false })
        );
        assert_eq!(
            parse_request(br#"{"command": ["stats"]}"#),
            Ok(Command::Stats)
        );
    }

    #[test]
    fn refuses_nonsense_with_the_list_of_commands() {
        let err = parse_words(&words("worker add zero")).expect_err("bad count");
        assert!(err.contains("not a worker count"), "{err}");
        let err = parse_words(&words("frobnicate")).expect_err("unknown");
        assert!(err.contains("use status, workers"), "{err}");
        assert!(parse_request(b"{}").is_err());
    }
}
