//! The fuzz target `fuzz/fuzz_targets/admin_request.rs` on stable, and the admin server's real
//! request path. First, 200,000 mutated request heads (method, path, Host, Origin, client address)
//! go through `palisade_admin::decide`, whose refusals must keep the trust model: any Origin, or
//! a Host that is not a loopback address or localhost, is refused, and only `POST /shutdown` from
//! loopback shuts down. Then up to 2,000 mutated raw requests are sent over TCP to a real admin
//! server on 127.0.0.1 (port 0), each read with a timeout: every answer must be a status line or
//! a closed connection, no request with an Origin header may succeed, only a `POST /shutdown`
//! request may shut down, and the server must still answer `GET /live` at the end. The checks of
//! `decide` are fuzz/checks/admin_request.rs, the same file the fuzz target includes. Bounded to
//! about 10 seconds in all (the counts are printed). docs/FUZZING.md.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mutate::{mutate, smoke, Bounds, Rng};
use palisade_admin::{AdminService, NotReady};

// The checks of `decide` themselves, shared with the fuzz target so that the two cannot drift
// apart; the raw requests over TCP below are this test's own.
#[path = "../fuzz/checks/admin_request.rs"]
mod checks;

const HEADS: usize = 200_000;
const REQUESTS: usize = 2_000;
const HEAD_BUDGET: Duration = Duration::from_secs(3);
const TCP_BUDGET: Duration = Duration::from_secs(7);
/// Longest wait for one answer: a request the server is still waiting on (an unfinished head)
/// is cut off by its header timeout, set to less than this below.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Request heads in the fuzz target's line format: method, path, Host (`-`: none), Origin (a
/// non-empty line: present), client address.
const HEAD_SEEDS: &[&str] = &[
    "GET\n/live\n127.0.0.1:15000\n\n127.0.0.1",
    "HEAD\n/ready\nlocalhost\n\n::1",
    "GET\n/metrics\n[::1]:15000\n\n127.0.0.1",
    "POST\n/shutdown\nLOCALHOST:1\n\n127.0.0.1",
    "POST\n/shutdown\n127.0.0.1\n\n10.0.0.1",
    "POST\n/shutdown\n127.0.0.1:15000\nhttp://evil.example\n127.0.0.1",
    "GET\n/metrics\nrebind.evil.example:15000\n\n127.0.0.1",
    "DELETE\n/live\n-\n\n127.0.0.1",
    "GET\n/nothing\n[::ffff:127.0.0.1]:1\n\n127.0.0.1",
];

const HEAD_TOKENS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "/live",
    "/ready",
    "/metrics",
    "/shutdown",
    "localhost",
    "127.0.0.1",
    "127.255.0.1",
    "::1",
    "[::1]",
    "[",
    "]",
    ":",
    "\t",
    "\n",
    "-",
    "%2f",
    "/..",
    "é",
];

/// Raw requests as a client would send them.
const RAW_SEEDS: &[&str] = &[
    "GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "HEAD /ready HTTP/1.1\r\nHost: localhost:15000\r\n\r\n",
    "GET /metrics HTTP/1.1\r\nHost: [::1]:15000\r\nAccept: */*\r\n\r\n",
    "POST /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    "POST /shutdown HTTP/1.1\r\nHost: 127.0.0.1:15000\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\n\r\n",
    "GET /metrics HTTP/1.1\r\nHost: rebind.evil.example:15000\r\n\r\n",
    "GET /live HTTP/1.0\r\n\r\n",
    "PUT /live?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
];

const RAW_TOKENS: &[&str] = &[
    "\r\n",
    "Host: ",
    "Origin: ",
    "origin: null\r\n",
    "HOST: 127.0.0.1\r\n",
    "Content-Length: ",
    "Transfer-Encoding: chunked\r\n",
    "Connection: keep-alive\r\n",
    "Expect: 100-continue\r\n",
    "HTTP/1.1",
    "HTTP/2",
    " ",
    "\t",
    "%00",
    "/shutdown",
    "POST",
];

/// One head through the shared checks; true when it was refused.
fn check_head(input: &str) -> bool {
    checks::check(input.as_bytes()).expect("a head of UTF-8 lines is always a head")
}

struct Fake {
    shutdowns: AtomicUsize,
}

impl AdminService for Fake {
    fn ready(&self) -> Result<(), NotReady> {
        Err("a fake".into())
    }
    fn metrics(&self) -> String {
        "# EOF\n".into()
    }
    fn shutdown(&self) -> Option<()> {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
        Some(())
    }
}

/// A real admin server on a runtime of its own; its address. Its header timeout is shorter than
/// the test's read timeout, so an unfinished request is answered (or closed) before the test
/// gives up on it.
fn start(service: Arc<Fake>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            palisade_admin::serve_with(
                listener,
                service,
                tokio_util::sync::CancellationToken::new(),
                Duration::from_millis(500),
                palisade_admin::MAX_CONNECTIONS,
            )
            .await;
        });
    });
    rx.recv().unwrap()
}

/// Sends `request` and reads the answer until the server closes or the read times out.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    // The server may close before it has read everything (a bad request line): not an error.
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// The status code of an answer, if it starts with a status line.
fn status(answer: &[u8]) -> Option<u16> {
    let rest = answer.strip_prefix(b"HTTP/1.")?.get(2..5)?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

#[test]
fn request_heads_and_raw_requests_never_break_the_admin_server() {
    let started = Instant::now();
    let heads: Vec<String> = HEAD_SEEDS.iter().map(|s| s.to_string()).collect();
    let seeds_refused = heads.iter().filter(|h| check_head(h)).count();
    assert_eq!(seeds_refused, 4, "origin, rebind, remote shutdown, mapped");
    let mut rng = Rng(0xadad_0f0f_2026_1205);
    let head_bounds = Bounds {
        max: HEADS,
        min: 1_000,
        budget: HEAD_BUDGET,
    };
    let smoked = smoke(
        head_bounds,
        &mut rng,
        |rng| mutate(rng, &heads, HEAD_TOKENS),
        |input| usize::from(check_head(input)),
    );
    let (head_mutations, refused) = (smoked.inputs, smoked.counted);

    let heads_took = started.elapsed();

    let service = Arc::new(Fake {
        shutdowns: AtomicUsize::new(0),
    });
    let addr = start(service.clone());
    let raw: Vec<String> = RAW_SEEDS.iter().map(|s| s.to_string()).collect();
    let tcp_started = Instant::now();
    let (mut sent, mut answered, mut succeeded) = (0usize, 0usize, 0usize);
    // The seeds first, then mutations of them.
    while sent < REQUESTS && tcp_started.elapsed() < TCP_BUDGET {
        let request = if sent < raw.len() {
            raw[sent].clone()
        } else {
            mutate(&mut rng, &raw, RAW_TOKENS)
        };
        let shutdowns_before = service.shutdowns.load(Ordering::SeqCst);
        let answer = exchange(addr, request.as_bytes());
        sent += 1;
        if answer.is_empty() {
            continue;
        }
        let code = status(&answer).unwrap_or_else(|| {
            panic!(
                "not a status line for {request:?}: {:?}",
                String::from_utf8_lossy(&answer)
            )
        });
        answered += 1;
        let lower = request.to_ascii_lowercase();
        if (200..300).contains(&code) {
            succeeded += 1;
            assert!(
                !lower.contains("\r\norigin:") && !lower.contains("\norigin:"),
                "{code} for a request with an Origin header: {request:?}"
            );
        }
        if service.shutdowns.load(Ordering::SeqCst) > shutdowns_before {
            // HTTP/1.1 servers skip empty lines before the request line (RFC 9112, 2.2).
            let request_line = request
                .trim_start_matches(['\r', '\n'])
                .lines()
                .next()
                .unwrap_or("");
            assert!(
                request_line.starts_with("POST ") && request_line.contains("/shutdown"),
                "{request:?} shut down"
            );
            assert_eq!(code, 202, "{request:?}");
        }
    }
    let answer = exchange(addr, b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(status(&answer), Some(200), "the server stopped answering");
    println!(
        "admin fuzz smoke: {head_mutations} mutated heads ({refused} refused) in {:.1} s; {sent} raw requests over TCP ({answered} answered, {succeeded} with 2xx, {} shutdowns) in {:.1} s; no panic, no hang",
        heads_took.as_secs_f64(),
        service.shutdowns.load(Ordering::SeqCst),
        tcp_started.elapsed().as_secs_f64()
    );
    assert!(
        sent >= 50,
        "only {sent} requests were sent in {TCP_BUDGET:?}"
    );
    assert!(
        service.shutdowns.load(Ordering::SeqCst) >= 1,
        "the seed POST /shutdown did not shut down"
    );
}
