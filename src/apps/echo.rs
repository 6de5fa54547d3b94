//! `echo`: answers with a JSON description of the request it received, so
//! conformance tools can check exactly what the worker parsed.

use std::io::Read;

use base64::Engine;

use crate::app::{
    ClientCertSubject, PeerAddr, RawHeaders, RawTarget, Request, Response, Scheme, respond,
};

/// Reads the whole body and answers 200 with JSON: `method`, `target` (as
/// sent), `version`, `headers` (as sent, in order), `body_base64`,
/// `trailers`, and how the client came: `scheme`, `client_addr` and
/// `client_cert_subject` (null without one). A body the client cut short is shown as far as it arrived;
/// another read error gets a 400.
///
/// ```
/// use forkhorn::app::{Body, ResponseBody};
///
/// let req = http::Request::post("/items?id=7").body(Body::empty()).unwrap();
/// let resp = forkhorn::apps::echo::echo(req);
/// let ResponseBody::Bytes(json) = resp.body() else { panic!("a bytes body") };
/// let v: serde_json::Value = serde_json::from_slice(json).unwrap();
/// assert_eq!(v["method"], "POST");
/// assert_eq!(v["target"], "/items?id=7");
/// assert_eq!(v["body_base64"], "");
/// ```
pub fn echo(mut req: Request<'_>) -> Response {
    let mut body = Vec::new();
    match req.body_mut().read_to_end(&mut body) {
        Ok(_) => {}
        // The client stopped sending early: show what did arrive.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => {
            return respond(
                400,
                "text/plain",
                format!("cannot read the request body: {e}\n"),
            );
        }
    }
    let pairs = |fields: &[(String, Vec<u8>)]| -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    };
    let headers = req
        .extensions()
        .get::<RawHeaders>()
        .map(|h| pairs(&h.0))
        .unwrap_or_default();
    let target = req
        .extensions()
        .get::<RawTarget>()
        .map_or_else(|| req.uri().to_string(), |t| t.0.clone());
    let version = if req.version() == http::Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let reply = serde_json::json!({
        "method": req.method().as_str(),
        "target": target,
        "version": version,
        "headers": headers,
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&body),
        "trailers": pairs(req.body().trailers()),
        "scheme": req.extensions().get::<Scheme>().copied().unwrap_or(Scheme::Http).as_str(),
        "client_addr": req.extensions().get::<PeerAddr>().and_then(|p| p.0).map(|a| a.to_string()),
        "client_cert_subject": req.extensions().get::<ClientCertSubject>().map(|s| s.0.clone()),
    });
    respond(200, "application/json", reply.to_string())
}
