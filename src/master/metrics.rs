//! The metrics endpoint: Prometheus text at `/metrics` and a readiness probe
//! at `/healthz`, rendered by the master from its `Snapshot`.

use std::fmt::Write;

use crate::heartbeat::{DURATION_BUCKETS, WorkerState};
use crate::http::{Limits, parse_head};
use crate::master::stats::{Reason, Snapshot};

/// A request head ends the request (the endpoint takes no bodies).
pub fn framing(input: &[u8]) -> Option<usize> {
    match parse_head(input, &Limits::default()) {
        Ok(Some((_, n))) => Some(n),
        Ok(None) => None,
        // A broken request is answered (with 400) as soon as it is seen.
        Err(_) => Some(input.len()),
    }
}

/// Answer one request to the metrics endpoint.
pub fn answer(request: &[u8], snapshot: &Snapshot) -> Vec<u8> {
    let target = match parse_head(request, &Limits::default()) {
        Ok(Some((head, _))) if head.method == "GET" || head.method == "HEAD" => head.target,
        Ok(Some(_)) => return response(405, "text/plain", "only GET is served here\n"),
        _ => return response(400, "text/plain", "bad request\n"),
    };
    match target.split('?').next().unwrap_or("") {
        "/metrics" => response(200, "text/plain; version=0.0.4", &render(snapshot)),
        "/healthz" if snapshot.is_healthy() => response(200, "text/plain", "ok\n"),
        "/healthz" => response(503, "text/plain", "not ready\n"),
        _ => response(404, "text/plain", "not found: try /metrics or /healthz\n"),
    }
}

fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Prometheus text exposition format 0.0.4.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP forkhorn_workers Worker processes by state.\n# TYPE forkhorn_workers gauge"
    );
    for state in [
        WorkerState::Booting,
        WorkerState::Idle,
        WorkerState::Busy,
        WorkerState::Retiring,
        WorkerState::Stopping,
    ] {
        let n = s.workers.iter().filter(|w| w.state == state).count();
        let _ = writeln!(out, "forkhorn_workers{{state=\"{}\"}} {n}", state.as_str());
    }

    let _ = writeln!(
        out,
        "# HELP forkhorn_requests_total Requests answered, by status class.\n# TYPE forkhorn_requests_total counter"
    );
    for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .zip(s.totals.status_classes)
    {
        let _ = writeln!(
            out,
            "forkhorn_requests_total{{status_class=\"{class}\"}} {n}"
        );
    }

    let _ = writeln!(
        out,
        "# HELP forkhorn_request_duration_seconds Time from a request's head to the end of its response.\n# TYPE forkhorn_request_duration_seconds histogram"
    );
    let mut cumulative = 0;
    for (bound, n) in DURATION_BUCKETS.iter().zip(s.totals.duration_buckets) {
        cumulative += n;
        let _ = writeln!(
            out,
            "forkhorn_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += s.totals.duration_buckets[DURATION_BUCKETS.len()];
    let _ = writeln!(
        out,
        "forkhorn_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "forkhorn_request_duration_seconds_sum {}",
        s.totals.duration_sum_us as f64 / 1e6
    );
    let _ = writeln!(out, "forkhorn_request_duration_seconds_count {cumulative}");

    let _ = writeln!(
        out,
        "# HELP forkhorn_response_bytes_total Response bytes written.\n# TYPE forkhorn_response_bytes_total counter\nforkhorn_response_bytes_total {}",
        s.totals.bytes_out
    );

    let _ = writeln!(
        out,
        "# HELP forkhorn_tls_handshake_failures_total TLS handshakes that failed or timed out.\n# TYPE forkhorn_tls_handshake_failures_total counter\nforkhorn_tls_handshake_failures_total {}",
        s.totals.tls_handshake_failures
    );

    let _ = writeln!(
        out,
        "# HELP forkhorn_worker_restarts_total Workers replaced, by reason.\n# TYPE forkhorn_worker_restarts_total counter"
    );
    for reason in Reason::RESTARTS {
        let n = s.restarts.get(&reason).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "forkhorn_worker_restarts_total{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }

    let _ = writeln!(
        out,
        "# HELP forkhorn_worker_rss_bytes Resident memory of each worker.\n# TYPE forkhorn_worker_rss_bytes gauge"
    );
    for w in &s.workers {
        if let Some(rss) = w.rss_bytes {
            let _ = writeln!(
                out,
                "forkhorn_worker_rss_bytes{{worker=\"{}\",pid=\"{}\"}} {rss}",
                w.id, w.pid
            );
        }
    }

    if !s.backlog.is_empty() {
        let _ = writeln!(
            out,
            "# HELP forkhorn_listen_backlog Connections waiting to be accepted.\n# TYPE forkhorn_listen_backlog gauge"
        );
        for (name, n) in &s.backlog {
            let _ = writeln!(out, "forkhorn_listen_backlog{{listener=\"{name}\"}} {n}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP forkhorn_up 1 while the master is serving, 0 while it stops.\n# TYPE forkhorn_up gauge\nforkhorn_up {}",
        u8::from(!s.is_stopping)
    );
    out
}
