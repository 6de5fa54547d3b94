//! Deployment behaviour: systemd readiness and socket activation, PID 1 in
//! a container, and dropping privileges. Real processes, real sockets.

mod common;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// Read notify datagrams until one contains `want`; returns all seen.
fn wait_for_notify(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + EVENTUALLY;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = msg.lines().any(|l| l == want);
            seen.push(msg);
            if found {
                return true;
            }
        }
    }
    false
}

#[test]
fn systemd_hears_ready_then_reloading_and_ready_on_hup_then_stopping_on_term() {
    let dir = fresh_dir();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let path_str = path.to_str().expect("utf-8 path");
    let mut server = Server::start_with_env(&["-w", "2", "hello"], &[("NOTIFY_SOCKET", path_str)]);

    let mut seen = Vec::new();
    assert!(
        wait_for_notify(&sock, "READY=1", &mut seen),
        "no READY=1; got {seen:?}"
    );
    assert!(
        seen.last()
            .is_some_and(|m| m.contains("STATUS=2 workers serving")),
        "READY carries a status line: {seen:?}"
    );
    server.signal(Signal::SIGHUP);
    let mut after_hup = Vec::new();
    assert!(
        wait_for_notify(&sock, "READY=1", &mut after_hup),
        "no READY=1 after HUP; got {after_hup:?}"
    );
    let reloading = after_hup
        .iter()
        .position(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before the new READY: {after_hup:?}"));
    assert!(
        after_hup[reloading]
            .lines()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 comes with MONOTONIC_USEC (Type=notify-reload): {after_hup:?}"
    );
    assert_eq!(
        reloading, 0,
        "RELOADING=1 is the first message after HUP: {after_hup:?}"
    );

    server.signal(Signal::SIGTERM);
    let mut at_stop = Vec::new();
    assert!(
        wait_for_notify(&sock, "STOPPING=1", &mut at_stop),
        "no STOPPING=1; got {at_stop:?}"
    );
    assert_eq!(server.wait_exit(EVENTUALLY).and_then(|s| s.code()), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_inherited_socket_from_systemd_is_served() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fd = listener.as_raw_fd();
    let tmp = fresh_dir();
    // LISTEN_PID must name the process that reads it: a shell sets it to
    // its own pid ($$) and then execs forkhorn, which keeps that pid.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" -w 1 --worker-tmp-dir \"$1\" hello")
        .arg(BIN)
        .arg(&tmp)
        .env_remove("WEB_CONCURRENCY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe; `fd` stays open in the parent
    // until after spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec set, so clear it then.
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn forkhorn");
    drop(listener);
    let pid = i32::try_from(child.id()).expect("pid");
    let answered = wait_until(EVENTUALLY, || get(port, "/").is_ok_and(|r| r.status == 200));
    signal(pid, Signal::SIGTERM);
    let status = child.wait().expect("wait");
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut log);
    }
    assert!(answered, "no answer on the inherited socket; log:\n{log}");
    assert!(
        log.contains(&format!("Listening at: http://127.0.0.1:{port} ")),
        "the inherited socket is named in the log:\n{log}"
    );
    assert!(
        !log.contains("127.0.0.1:8000"),
        "with inherited sockets and no -b, the default bind is not used:\n{log}"
    );
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    let _ = std::fs::remove_dir_all(tmp);
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether this run is CI (`CI=true`), where every tool a test needs is
/// installed, so a test that cannot run fails instead of skipping.
fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Why `unshare --pid` cannot run here (the tool is missing, or the kernel
/// refuses the namespace, e.g. without root), or None if it can: the probe
/// runs `true` in a new PID namespace, the way the test runs forkhorn.
fn unshare_unavailable() -> Option<String> {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some("unshare is not installed (it comes with util-linux)".to_owned())
        }
        Err(e) => Some(format!("cannot run unshare: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "the kernel refuses a new PID namespace (unshare --pid --fork --mount-proc true: {}, {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

#[test]
fn as_pid_1_it_reaps_orphans_and_stops_cleanly_on_term() {
    // Only a missing or refused unshare may skip this test, and never under
    // CI; once unshare works, a forkhorn that does not start is a failure.
    if let Some(why) = unshare_unavailable() {
        assert!(!is_ci(), "CI must run the PID 1 test, but {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = fresh_dir();
    let mut child = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            BIN,
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "--worker-tmp-dir",
        ])
        .arg(&tmp)
        .arg("chaos")
        .env_remove("WEB_CONCURRENCY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let unshare_pid = i32::try_from(child.id()).expect("pid");
    let log = {
        use std::io::BufRead;
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let mut lines = Vec::new();
    let port = loop {
        match log.recv_timeout(EVENTUALLY) {
            Ok(line) => {
                let port = line
                    .split("Listening at: http://127.0.0.1:")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|p| p.parse::<u16>().ok());
                lines.push(line);
                if let Some(p) = port {
                    break p;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "forkhorn did not start as PID 1 under a working unshare (no Listening at: \
                     line within {EVENTUALLY:?}; unshare: {status:?}); its log: {lines:?}"
                );
            }
        }
    };
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Listening at:") && l.ends_with("(1)")),
        "forkhorn is PID 1 of its namespace: {lines:?}"
    );
    // The master (PID 1 inside) is unshare's only child.
    let master = children_of(unshare_pid)
        .into_iter()
        .next()
        .expect("the master");
    for _ in 0..5 {
        let r = get(port, "/orphan?s=0.2").expect("orphan route");
        assert_eq!(r.status, 200);
    }
    // Orphans (sleep) are re-parented to the master and must be reaped when
    // they exit: none may linger as a zombie, none may count as a worker.
    let reaped = wait_until(EVENTUALLY, || {
        children_of(master)
            .iter()
            .all(|&c| proc_stat(c).is_some_and(|s| s.state != 'Z') && !is_sleep(c))
    });
    assert!(reaped, "orphans left behind: {:?}", children_of(master));
    assert_eq!(
        get(port, "/pid").map(|r| r.status).ok(),
        Some(200),
        "still serving"
    );

    signal(master, Signal::SIGTERM);
    let deadline = Instant::now() + EVENTUALLY;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "PID 1 did not stop on TERM");
        std::thread::sleep(POLL_INTERVAL);
    };
    assert_eq!(status.code(), Some(0), "graceful stop as PID 1 exits 0");
    let _ = std::fs::remove_dir_all(tmp);
}

fn is_sleep(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
}

fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn with_user_nobody_workers_run_as_nobody_and_the_master_as_root() {
    if !is_root() {
        eprintln!("skipped: dropping privileges needs root");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("skipped: no user nobody on this machine");
        return;
    };
    let server = Server::start(&["-w", "2", "-u", "nobody", "chaos"]);
    let workers = server.wait_for_workers(2);
    let r = server.get("/pid").expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(uid_of(server.master), Some(0), "the master stays root");
    for w in workers {
        assert_eq!(
            uid_of(w),
            Some(nobody.uid.as_raw()),
            "worker {w} runs as nobody"
        );
    }
}

/// Every key of the file, each set away from its default.
const EVERY_KEY: &str = r#"
app = "echo"
bind = ["127.0.0.1:0", "unix:/tmp/forkhorn-every-key.sock"]
workers = 3
worker_class = "sync"
timeout = 12
graceful_timeout = 7
keep_alive = 2
max_requests = 100
max_requests_jitter = 9
worker_tmp_dir = "/tmp"
backlog = 99
pid = "/tmp/forkhorn-every-key.pid"
access_logfile = "-"
access_logformat = '%(h)s "%(r)s" %(s)s'
error_logfile = "-"
log_level = "warning"
limit_request_line = 2000
limit_request_fields = 50
limit_request_field_size = 4000
limit_request_body = 1000
worker_connections = 77
header_timeout = 3
permit_missing_host = true
permit_transfer_codings = true
static_dotfiles = true
control_socket = "/tmp/forkhorn-every-key.ctl"
no_control_socket = false
metrics_bind = "127.0.0.1:0"
max_worker_memory = 256
memory_check_interval = 2
slow_request_threshold = 1.5
min_worker_lifetime = 2
max_boot_failures = 4
max_streams_per_worker = 12
user = "0"
group = "0"
umask = "022"
initgroups = true
threads = 1
chdir = "/tmp"
pythonpath = ["/tmp/a", "/tmp/b"]
preload = true
env = ["DJANGO_SETTINGS_MODULE=site.settings", "EMPTY="]
certfile = ["/tmp/forkhorn-every-key-a.pem", "/tmp/forkhorn-every-key-b.pem"]
keyfile = ["/tmp/forkhorn-every-key-a.key", "/tmp/forkhorn-every-key-b.key"]
ca_certs = "/tmp/forkhorn-every-key-ca.pem"
cert_reqs = 2
tls_min_version = "1.3"
proxy_protocol = true
proxy_allow_from = "10.0.0.0/8"
forwarded_allow_ips = "*"
forwarded_header = "Forwarded"
"#;

#[test]
fn a_config_file_with_every_key_round_trips_through_print_config() {
    // The TLS files are read and checked: make them.
    for name in ["a", "b"] {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("make a certificate");
        let base = format!("/tmp/forkhorn-every-key-{name}");
        std::fs::write(format!("{base}.pem"), made.cert.pem()).expect("write cert");
        std::fs::write(format!("{base}.key"), made.signing_key.serialize_pem()).expect("write key");
        if name == "a" {
            std::fs::write("/tmp/forkhorn-every-key-ca.pem", made.cert.pem()).expect("write ca");
        }
    }
    let dir = fresh_dir();
    let path = dir.join("every.toml");
    std::fs::write(&path, EVERY_KEY).expect("write");
    let out = Command::new(BIN)
        .args(["-c", path.to_str().expect("utf-8"), "--print-config"])
        .env_remove("WEB_CONCURRENCY")
        .output()
        .expect("run");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let given: toml::Table = EVERY_KEY.parse().expect("input toml");
    let resolved: toml::Table = printed.parse().expect("print-config output is TOML");
    for (key, value) in &given {
        let got = resolved
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from:\n{printed}"));
        // Numbers may come back as numbers or strings; compare their text.
        let text = |v: &toml::Value| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(text(got), text(value), "{key} in:\n{printed}");
    }
    assert_eq!(
        resolved.len(),
        given.len(),
        "no key is missing from the test: {printed}"
    );
    // And the printed file is accepted back as it is.
    let again = dir.join("again.toml");
    std::fs::write(&again, printed.as_bytes()).expect("write");
    let out2 = Command::new(BIN)
        .args(["-c", again.to_str().expect("utf-8"), "--print-config"])
        .env_remove("WEB_CONCURRENCY")
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out2.stdout), printed);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn each_kind_of_bad_config_gets_its_own_error_and_exit_2() {
    let dir = fresh_dir();
    let cases = [
        (
            "workers = 2\nfrobnicate = 1\n",
            ":2: frobnicate: unknown key",
        ),
        (
            "timeout = true\n",
            ":1: timeout: expected a string or number, found boolean",
        ),
        (
            "bind = [[1]]\n",
            ":1: bind: expected a string or number, found array",
        ),
        (
            "timeout = [1, 2]\n",
            ":1: timeout: expected a single value, found an array",
        ),
        (
            "\n\ntimeout = -3\n",
            ":3: timeout: --timeout -3: must be a number of seconds",
        ),
        ("workers = \n", ":1: not valid TOML"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let out = Command::new(BIN)
            .args(["-c", path.to_str().expect("utf-8"), "-b", "127.0.0.1:0"])
            .env_remove("WEB_CONCURRENCY")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{}{want}", path.display())),
            "{text:?}: wanted {want:?} in {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_example_config_file_is_valid_and_holds_the_defaults() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/forkhorn.toml");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("WEB_CONCURRENCY")
            .env_remove("PORT")
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        run(&["-c", example, "--print-config", "-w", "4"]),
        run(&["--print-config", "-w", "4"])
    );
    assert!(
        run(&["-c", example, "--check-config", "-b", "127.0.0.1:0"]).contains("configuration OK")
    );
}

#[test]
fn hup_rereads_the_config_file() {
    let dir = fresh_dir();
    let path = dir.join("live.toml");
    std::fs::write(&path, "workers = 1\napp = \"chaos\"\n").expect("write");
    let path_str = path.to_str().expect("utf-8");
    let server = Server::start(&["-c", path_str]);
    server.wait_for_workers(1);
    std::fs::write(
        &path,
        "workers = 2\napp = \"chaos\"\nmetrics_bind = \"127.0.0.1:0\"\n",
    )
    .expect("rewrite");
    server.signal(Signal::SIGHUP);
    assert!(
        wait_until(EVENTUALLY, || server.workers().len() == 2
            && server.log.contains("Configuration reloaded")),
        "HUP applied workers = 2; log:\n{}",
        server.log
    );
    assert!(
        server
            .log
            .contains("metrics_bind changed in the configuration; it takes effect after a restart"),
        "a setting that needs a restart says so; log:\n{}",
        server.log
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn usr2_hands_over_to_a_new_master_without_failing_a_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = fresh_dir();
    let pidfile = dir.join("forkhorn.pid");
    let pidfile_str = pidfile.to_str().expect("utf-8");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut server = Server::start_with_env(
        &["-w", "2", "-p", pidfile_str, "chaos"],
        &[("NOTIFY_SOCKET", notify_path.to_str().expect("utf-8"))],
    );
    server.wait_for_workers(2);
    let old = server.master;
    let port = server.port;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (stop, served, failures) = (stop.clone(), served.clone(), failures.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match get(port, "/pid") {
                    Ok(r) if r.status == 200 => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("status {}", r.status)),
                    Err(e) => failures.lock().expect("lock").push(e.to_string()),
                }
            }
        })
    };
    assert!(wait_until(EVENTUALLY, || served.load(Ordering::Relaxed) > 20));

    server.signal(Signal::SIGUSR2);
    let status = server.wait_exit(EVENTUALLY);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the old master drains and exits 0; log:\n{}",
        server.log
    );
    let read_pid = || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    };
    assert!(
        wait_until(EVENTUALLY, || read_pid().is_some_and(|p| p != old)),
        "the pidfile names the new master"
    );
    let new = read_pid().expect("new master pid");
    assert!(is_alive(new));
    let before = served.load(Ordering::Relaxed);
    assert!(wait_until(EVENTUALLY, || served.load(Ordering::Relaxed) > before + 50));
    let worker = get(port, "/pid").expect("request").pid();
    assert_eq!(
        proc_stat(worker).map(|s| s.ppid),
        Some(new),
        "the new master's workers serve"
    );
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} requests failed across the upgrade: {failures:?}",
        failures.len()
    );
    assert!(
        !dir.join("forkhorn.pid.2").exists(),
        "PIDFILE.2 was renamed into place"
    );
    let mut seen = Vec::new();
    assert!(
        wait_for_notify(&notify, &format!("MAINPID={new}"), &mut seen),
        "systemd is told the new main pid: {seen:?}"
    );

    signal(new, Signal::SIGTERM);
    assert!(
        wait_until(EVENTUALLY, || !is_alive(new)),
        "the new master stops on TERM"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_new_master_that_cannot_start_leaves_the_old_one_serving() {
    let dir = fresh_dir();
    let path = dir.join("forkhorn.toml");
    std::fs::write(&path, "app = \"chaos\"\nworkers = 1\n").expect("write");
    let server = Server::start(&["-c", path.to_str().expect("utf-8")]);
    let worker = *server.wait_for_workers(1).iter().next().expect("a worker");
    // The new binary will read a broken file and refuse to start.
    std::fs::write(&path, "app = \"chaos\"\nworkers = \n").expect("break the file");
    server.signal(Signal::SIGUSR2);
    assert!(
        server
            .log
            .wait_for(EVENTUALLY, |l| l.contains("Upgrade failed"))
            .is_some(),
        "the old master says the upgrade failed; log:\n{}",
        server.log
    );
    assert!(
        server.log.contains("not valid TOML"),
        "and why; log:\n{}",
        server.log
    );
    let r = server.get("/pid").expect("still serving");
    assert_eq!(
        (r.status, r.pid()),
        (200, worker),
        "the same master and worker serve on"
    );
    let _ = std::fs::remove_dir_all(dir);
}
