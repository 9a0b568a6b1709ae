//! The HTTP listener against hostile clients (issue 19, items 4, 10, 12 and
//! the HTTP door of the property suite).
//!
//! The agent's own router and accept loop, in process: a state change is
//! exactly a [`Request`] reaching the manager, which these tests play (they
//! answer every request and count it), so "nothing changed" is observed,
//! not assumed. The connection tests serve on a real loopback socket with
//! short timeouts from the config; every wait is bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode};
use edge_agent::alert::{topics_of, Ledger, Outbox, Spool};
use edge_agent::config::Config;
use edge_agent::control::{Change, Request};
use edge_agent::http::{auth::Tokens, HttpState, LatestFrame, SECURITY_HEADERS};
use edge_agent::metrics::Metrics;
use edge_agent::shutdown::Shutdown;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

const READ: &str = "read-token-0123456789";
const CHANGE: &str = "change-token-0123456789";

/// The agent's HTTP side with one camera (`cam-1`, a frame stored), the
/// `[http]` section `http`, and a manager that accepts every change and
/// remembers it.
struct Harness {
    state: HttpState,
    changes: Arc<Mutex<Vec<Change>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(http: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"agent_id = "edge-1"
site = {{ district = "d", street = "s", community = "c" }}
http = {{ {http} }}

[broker]
host = "127.0.0.1"

[detector]
path = "m.onnx"
format = "nanodet"
input_size = 416

[[cameras]]
id = "cam-1"
name = "Camera 1"
url = "rtsp://10.0.0.1/sub"
lanes = [{{ name = "lane", polygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]], classes = ["car"], dwell_s = 30 }}]
"#
        );
        let config = Config::parse(&text, &dir.path().join("agent.toml")).expect("test config");
        let metrics = Arc::new(Metrics::new());
        metrics.models_loaded.set(1);
        metrics.mqtt_connected.set(1);
        let spool = Spool::open(&dir.path().join("spool.sqlite"), 1 << 20).unwrap();
        let outbox = Outbox::new(spool, Ledger::new(&config.alerts, &config.site), topics_of(&config), metrics.clone());
        let frame = Arc::new(LatestFrame::new("Camera 1"));
        frame.store(&[128u8; 8 * 6 * 3], 8, 6, SystemTime::now());
        let frames = Arc::new(Mutex::new([("cam-1".to_string(), frame)].into_iter().collect()));
        let tokens = Tokens::from_config(&config.http).unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(config));
        let (requests, mut incoming) = tokio::sync::mpsc::channel::<Request>(8);
        let changes = Arc::new(Mutex::new(Vec::new()));
        let seen = changes.clone();
        // The manager: recorded before the answer, so a handler that has
        // answered has been counted.
        std::thread::spawn(move || {
            while let Some(r) = incoming.blocking_recv() {
                seen.lock().unwrap().push(r.change);
                let _ = r.reply.send(Ok(()));
            }
        });
        let state = HttpState { metrics, outbox, frames, quality: 80, config: rx, requests, tokens };
        Harness { state, changes, _dir: dir }
    }

    fn changed(&self) -> usize {
        self.changes.lock().unwrap().len()
    }

    /// One request through the agent's router: (status, headers, body).
    async fn call(&self, req: HttpRequest<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let r = edge_agent::http::router(self.state.clone()).oneshot(req).await.unwrap();
        let (parts, body) = r.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap();
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpRequest<Body> {
    let mut b = HttpRequest::builder().method(method).uri(path).header("host", "127.0.0.1:9464");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn assert_secure(headers: &axum::http::HeaderMap, what: &str) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name} on {what}");
    }
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
}

/// Item 4: another web page posts the reset of a blocked lane's reference
/// as a plain form (the body is empty, so no preflight): refused, nothing
/// reaches the manager; the page's own request passes. Every answer forbids
/// framing, whatever its status.
#[tokio::test]
async fn a_cross_site_form_cannot_reset_a_reference_and_no_answer_can_be_framed() {
    // No token (loopback): before the fix, the Host header was the only guard.
    let h = Harness::new("");
    let form = ("content-type", "application/x-www-form-urlencoded");
    let attacks: &[&[(&str, &str)]] = &[
        &[("origin", "https://evil.example"), form],
        &[("origin", "https://evil.example"), ("sec-fetch-site", "cross-site"), form],
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "null"), form],
        // A browser that sends no Origin: its only cross-site POST is a form.
        &[form],
    ];
    for headers in attacks {
        let (status, hdrs, body) = h.call(req("POST", "/api/cameras/cam-1/reference", headers, "")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}: {body}");
        assert!(body.contains("own page") || body.contains("Content-Type"), "{body}");
        assert_secure(&hdrs, "a refusal");
    }
    let lane = r#"{"name":"x","polygon":[[0.1,0.1],[0.5,0.1],[0.5,0.5]],"classes":["car"],"dwell_s":5}"#;
    let (status, _, _) = h
        .call(req(
            "POST",
            "/api/cameras/cam-1/lanes",
            &[("origin", "https://evil.example"), ("content-type", "application/json")],
            lane,
        ))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a cross-origin JSON save (if a browser let it through)");
    assert_eq!(h.changed(), 0, "no change reached the agent");
    assert_eq!(h.state.metrics.http.cross_site_refused.get(), 6);

    // The page's own fetch (Chromium sends both headers) and a program
    // (curl with no body) still change.
    let own = [("origin", "http://127.0.0.1:9464"), ("sec-fetch-site", "same-origin")];
    let (status, hdrs, body) = h.call(req("POST", "/api/cameras/cam-1/reference", &own, "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_secure(&hdrs, "a change");
    let (status, _, body) = h.call(req("POST", "/api/cameras/cam-1/reference", &[], "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.changed(), 2);

    for (path, expect) in [
        ("/", 200),
        ("/technician.js", 200),
        ("/api/cameras/cam-1/snapshot.jpg", 200),
        ("/nowhere", 404),
        ("/healthz", 200),
    ] {
        let (status, hdrs, _) = h.call(req("GET", path, &[], "")).await;
        assert_eq!(status.as_u16(), expect, "{path}");
        assert_secure(&hdrs, path);
    }
    let (_, _, page) = h.call(req("GET", "/", &[], "")).await;
    let handler = page.split(" on").skip(1).any(|rest| {
        let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase()).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert!(!page.contains("<script>") && !page.contains("<style>") && !page.contains(" style="), "nothing inline");
    assert!(!handler, "no inline event handler attributes");
}

/// Item 12: the read token reads and cannot change; the change token does
/// both; a config with one token keeps working as before.
#[tokio::test]
async fn the_read_token_cannot_change_and_the_change_token_can() {
    let h = Harness::new(&format!(r#"token = "{READ}", change_token = "{CHANGE}""#));
    let bearer = |t: &str| format!("Bearer {t}");
    let (read, change) = (bearer(READ), bearer(CHANGE));
    for path in ["/metrics", "/api/cameras", "/api/config", "/"] {
        for auth in [&read, &change] {
            let (status, _, _) = h.call(req("GET", path, &[("authorization", auth)], "")).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
    }
    let (status, _, body) = h.call(req("POST", "/api/cameras/cam-1/reference", &[("authorization", &read)], "")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("http.change_token"), "the refusal names the key: {body}");
    let (status, _, _) = h
        .call(req("POST", "/api/cameras/cam-1/reference", &[("cookie", &format!("alleywatch_token={READ}"))], ""))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the read token as the page's cookie");
    assert_eq!(h.changed(), 0);
    let (status, _, body) =
        h.call(req("POST", "/api/cameras/cam-1/reference", &[("authorization", &change)], "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.changed(), 1);

    let legacy = Harness::new(&format!(r#"token = "{READ}""#));
    let (status, _, body) =
        legacy.call(req("POST", "/api/cameras/cam-1/reference", &[("authorization", &read)], "")).await;
    assert_eq!(status, StatusCode::OK, "one token alone still changes: {body}");
}

/// Serves the harness on a loopback port; the port, and the shutdown that
/// stops it.
async fn listen(h: &Harness) -> (u16, Shutdown) {
    let listener = edge_agent::http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = Shutdown::new();
    tokio::spawn(edge_agent::http::serve(listener, h.state.clone(), shutdown.clone()));
    (port, shutdown)
}

/// Reads until the peer closes (or resets), at most `limit`: what arrived,
/// and how long the close took; `None` if it stayed open.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Duration)> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((t0 + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((got, t0.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.ok()?;
    let (got, _) = until_closed(&mut s, Duration::from_secs(5)).await?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// Waits for `f` to hold, polling at most `limit`.
async fn eventually(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Item 10: sockets that never send a request head are closed after
/// `http.header_timeout_s`; past `http.max_connections` a connection is
/// answered 503 and closed at once; the listener serves again as soon as
/// idle sockets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_are_closed_and_the_connection_limit_holds() {
    let h = Harness::new("header_timeout_s = 0.5, idle_timeout_s = 1, max_connections = 4");
    let m = h.state.metrics.clone();
    let (port, _stop) = listen(&h).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    eventually("4 open connections", Duration::from_secs(5), || m.http.connections.get() == 4).await;
    let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (answer, _) = until_closed(&mut extra, Duration::from_secs(5)).await.expect("the 5th closed at once");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("http.max_connections (4)") && answer.contains("x-frame-options: DENY"), "{answer}");
    assert_eq!(m.http.connections_refused.get(), 1);
    for s in &mut idle {
        let (_, after) = until_closed(s, Duration::from_secs(5)).await.expect("an idle socket closed by the server");
        assert!(after < Duration::from_secs(3), "closed after {after:?}");
    }
    assert_eq!(m.http.timeouts.with_label_values(&["header"]).get(), 4);
    eventually("the connections released", Duration::from_secs(5), || m.http.connections.get() == 0).await;
    let ok = get(port, "/healthz").await.expect("/healthz answers");
    assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("ok\n"), "{ok}");

    // Mid-request: a head, then a body that stops arriving. The header
    // timeout is over; the idle timeout ends it.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /api/cameras/cam-1/lanes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\""
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let (_, after) = until_closed(&mut slow, Duration::from_secs(5)).await.expect("a stalled upload closed");
    assert!(after >= Duration::from_millis(900), "not before the idle timeout: {after:?}");
    assert_eq!(m.http.timeouts.with_label_values(&["idle"]).get(), 1);
    assert_eq!(h.changed(), 0);
}

/// Item 10: with the limit reached by clients that hold their sockets
/// (a long header timeout), the listener refuses, and serves again as soon
/// as they let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_recovers_when_held_sockets_go() {
    let h = Harness::new("header_timeout_s = 60, max_connections = 3");
    let m = h.state.metrics.clone();
    let (port, _stop) = listen(&h).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    eventually("3 open connections", Duration::from_secs(5), || m.http.connections.get() == 3).await;
    let refused = get(port, "/healthz").await.unwrap_or_default();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    held.truncate(1);
    eventually("the dropped sockets released", Duration::from_secs(5), || m.http.connections.get() == 1).await;
    let ok = get(port, "/healthz").await.expect("/healthz answers");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

// ---- the HTTP door of the property suite -------------------------------

/// Property cases for the HTTP door.
const CASES: u32 = 512;

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_string()),
        Just("HEAD".to_string()),
        Just("POST".to_string()),
        Just("PUT".to_string()),
        Just("DELETE".to_string()),
        Just("PATCH".to_string()),
        Just("OPTIONS".to_string()),
        "[A-Z]{1,8}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("cam-1".to_string()),
        Just("lane".to_string()),
        Just("..".to_string()),
        Just("%2e%2e".to_string()),
        Just("%00".to_string()),
        "[a-zA-Z0-9._~%-]{0,12}",
    ];
    let known = prop_oneof![
        Just("/"),
        Just("/metrics"),
        Just("/healthz"),
        Just("/readyz"),
        Just("/api/cameras"),
        Just("/api/config"),
        Just("/api/events"),
        Just("/technician.js"),
        Just("/api/cameras/cam-1/snapshot.jpg"),
        Just("/api/cameras/cam-1/lanes"),
        Just("/api/cameras/cam-1/reference"),
        Just("/api/cameras/cam-1/lanes/lane/reference"),
    ];
    prop_oneof![
        known.prop_map(String::from),
        (proptest::collection::vec(segment, 0..6), proptest::option::of("[a-z=&%0-9]{0,20}")).prop_map(|(s, q)| {
            let mut p = format!("/{}", s.join("/"));
            if let Some(q) = q {
                p = format!("{p}?{q}");
            }
            p
        }),
    ]
}

/// Who the request says it is: (header, value) pairs, each maybe absent.
fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let auth = prop_oneof![
        Just(None),
        Just(Some(format!("Bearer {READ}"))),
        Just(Some(format!("Bearer {CHANGE}"))),
        Just(Some("Bearer ".to_string())),
        Just(Some(format!("Bearer {CHANGE}x"))),
        Just(Some(format!("Basic {CHANGE}"))),
        "[ -~]{0,30}".prop_map(Some),
    ];
    let cookie = prop_oneof![
        Just(None),
        Just(Some(format!("alleywatch_token={READ}"))),
        Just(Some(format!("alleywatch_token={CHANGE}"))),
        "[ -~]{0,30}".prop_map(Some),
    ];
    let origin = prop_oneof![
        Just(None),
        Just(Some("http://127.0.0.1:9464".to_string())),
        Just(Some("https://evil.example".to_string())),
        Just(Some("null".to_string())),
        "[ -~]{0,30}".prop_map(Some),
    ];
    let site = prop_oneof![
        Just(None),
        Just(Some("same-origin".to_string())),
        Just(Some("none".to_string())),
        Just(Some("cross-site".to_string())),
        Just(Some("same-site".to_string())),
    ];
    let kind = prop_oneof![
        Just(None),
        Just(Some("application/json".to_string())),
        Just(Some("application/x-www-form-urlencoded".to_string())),
        Just(Some("text/plain".to_string())),
        "[ -~]{0,30}".prop_map(Some),
    ];
    let host = prop_oneof![
        Just("127.0.0.1:9464".to_string()),
        Just("localhost".to_string()),
        Just("evil.example".to_string()),
        "[ -~]{0,20}",
    ];
    (auth, cookie, origin, site, kind, host).prop_map(|(auth, cookie, origin, site, kind, host)| {
        let mut out = vec![("host".to_string(), host)];
        for (k, v) in [("authorization", auth), ("cookie", cookie), ("origin", origin), ("sec-fetch-site", site)]
            .into_iter()
            .chain([("content-type", kind)])
        {
            if let Some(v) = v {
                out.push((k.to_string(), v));
            }
        }
        out
    })
}

/// A request close to a real change (the page's own, or another page's, or
/// with the read token): the cases where a gate could let one slip.
fn near_change() -> impl Strategy<Value = (String, String, Vec<(String, String)>, Vec<u8>)> {
    let path = prop_oneof![
        Just("/api/cameras/cam-1/lanes"),
        Just("/api/cameras/cam-1/reference"),
        Just("/api/cameras/cam-1/lanes/lane/reference"),
    ];
    let auth = prop_oneof![Just(None), Just(Some(READ)), Just(Some(CHANGE))];
    let origin = prop_oneof![Just(None), Just(Some("http://127.0.0.1:9464")), Just(Some("https://evil.example"))];
    let site = prop_oneof![Just(None), Just(Some("same-origin")), Just(Some("cross-site"))];
    let kind = prop_oneof![Just(Some("application/json")), Just(None), Just(Some("application/x-www-form-urlencoded"))];
    let method = prop_oneof![3 => Just("POST"), 1 => Just("PUT"), 1 => Just("GET")];
    let lane = br#"{"name":"p","polygon":[[0.1,0.1],[0.5,0.1],[0.5,0.5]],"classes":["car"],"dwell_s":5}"#;
    let body = prop_oneof![Just(Vec::new()), Just(lane.to_vec()), body()];
    (method, path, auth, prop::bool::ANY, origin, site, kind, body).prop_map(
        |(method, path, auth, as_cookie, origin, site, kind, body)| {
            let mut h = vec![("host".to_string(), "127.0.0.1:9464".to_string())];
            if let Some(t) = auth {
                h.push(if as_cookie {
                    ("cookie".into(), format!("alleywatch_token={t}"))
                } else {
                    ("authorization".into(), format!("Bearer {t}"))
                });
            }
            for (k, v) in [("origin", origin), ("sec-fetch-site", site), ("content-type", kind)] {
                if let Some(v) = v {
                    h.push((k.to_string(), v.to_string()));
                }
            }
            (method.to_string(), path.to_string(), h, body)
        },
    )
}

fn body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(br#"{"name":"p","polygon":[[0.1,0.1],[0.5,0.1],[0.5,0.5]],"classes":["car"],"dwell_s":5}"#.to_vec()),
        "[ -~]{0,200}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..300),
        (1usize..6).prop_map(|d| format!("{}1{}", "[".repeat(d * 40), "]".repeat(d * 40)).into_bytes()),
    ]
    .boxed()
}

/// The HTTP door: random methods, paths, headers and bodies, with and
/// without each token. Never a 5xx; a change reaches the agent only with
/// the change token, by a method that changes, and never from another site.
#[test]
fn no_request_errors_or_changes_without_the_change_token() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let h = rt.block_on(async { Harness::new(&format!(r#"token = "{READ}", change_token = "{CHANGE}""#)) });
    let cases = AtomicUsize::new(0);
    let config = ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() };
    let case = prop_oneof![(method(), path(), headers(), body()), near_change()];
    proptest!(config, |((method, path, headers, body) in case)| {
        cases.fetch_add(1, Ordering::Relaxed);
        let Ok(m) = axum::http::Method::from_bytes(method.as_bytes()) else { return Ok(()) };
        let mut b = HttpRequest::builder().method(m.clone()).uri(path.as_str());
        for (k, v) in &headers {
            b = b.header(k.as_str(), v.as_bytes());
        }
        // A request hyper would refuse to parse never reaches the router.
        let Ok(request) = b.body(Body::from(body)) else { return Ok(()) };
        let before = h.changed();
        let (status, hdrs, text) = rt.block_on(h.call(request));
        prop_assert!(!status.is_server_error(), "{method} {path} {headers:?}: {status} {text}");
        prop_assert_eq!(hdrs.get("x-frame-options").map(|v| v.as_bytes()), Some(&b"DENY"[..]));
        if h.changed() > before {
            let value = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let change_token = value("authorization")
                .is_some_and(|a| a.strip_prefix("Bearer ").is_some_and(|t| t.trim() == CHANGE))
                || (value("authorization").is_none()
                    && value("cookie").is_some_and(|c| c == format!("alleywatch_token={CHANGE}")));
            prop_assert!(change_token, "changed without the change token: {method} {path} {headers:?}");
            prop_assert!(m != axum::http::Method::GET && m != axum::http::Method::HEAD);
            prop_assert!(
                !matches!(value("sec-fetch-site"), Some("cross-site" | "same-site"))
                    && value("origin").is_none_or(|o| o == "http://127.0.0.1:9464"),
                "a change from another site: {headers:?}"
            );
        }
    });
    let n = cases.load(Ordering::Relaxed);
    eprintln!("HTTP door: {n} property cases, {} changes accepted", h.changed());
    assert!(n >= CASES as usize, "ran {n} cases");
}
