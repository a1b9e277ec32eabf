//! The sidecar's data path end to end, with the real binary: a client sidecar (outbound listener)
//! and a server sidecar (inbound listener) in front of a small app, all on loopback port 0.
//!
//! What a byte-stream proxy must get right: bulk data intact both ways, half-close, protocols
//! where the server speaks first, a drain on SIGTERM that lets a transfer finish, and the limits
//! (handshake and idle timeouts, the connection cap) under a flood. Every wait is bounded.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{Context, SHA256};
use common::{banner_then_echo, echo, spawn_app, wait_until, Pki, SidecarProcess};

/// The two CPU-heavy tests (100 MB each way, the flood) take this so they do not run at the same
/// time on a 2-core machine, where each would distort the other's timeouts.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

const SERVER_ID: &str = "ns/data/sa/server";
const CLIENT_ID: &str = "ns/data/sa/client";

/// A client sidecar (outbound `out`) connected to a server sidecar (inbound `in`) that forwards
/// to an app. Each pair has its own temporary directory with its own CA.
struct Pair {
    client: SidecarProcess,
    server: SidecarProcess,
    _pki: Pki,
}

impl Pair {
    /// `server_extra` and `client_extra` are appended to each config (e.g. a `limits:` block).
    fn start(app: SocketAddr, server_extra: &str, client_extra: &str) -> Pair {
        let pki = Pki::new();
        pki.issue("server", SERVER_ID, &[]);
        pki.issue("client", CLIENT_ID, &[]);
        let server_config = format!(
            "{identity}inbound:\n  - name: in\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [spiffe://{td}/{CLIENT_ID}]\nadmin: {{ listen: 127.0.0.1:0 }}\n{server_extra}",
            identity = pki.identity_yaml("server"),
            td = common::TD,
        );
        let server = SidecarProcess::start(pki.path(), "server.yaml", &server_config, &["in"]);
        let client_config = format!(
            "{identity}outbound:\n  - name: out\n    listen: 127.0.0.1:0\n    connect_to: {to}\n    expect: [spiffe://{td}/{SERVER_ID}]\nadmin: {{ listen: 127.0.0.1:0 }}\n{client_extra}",
            identity = pki.identity_yaml("client"),
            to = server.addr("in"),
            td = common::TD,
        );
        let client = SidecarProcess::start(pki.path(), "client.yaml", &client_config, &["out"]);
        let pair = Pair {
            client,
            server,
            _pki: pki,
        };
        // Both must hold their certificates before a connection can go through.
        for sidecar in [&pair.server, &pair.client] {
            assert!(
                wait_until(Duration::from_secs(10), || sidecar.admin_get("/ready").0
                    == 200),
                "sidecar not ready:\n{}",
                sidecar.log_text()
            );
        }
        pair
    }

    /// A plaintext connection to the client sidecar's outbound listener, as the client app.
    fn connect(&self) -> TcpStream {
        connect(self.client.addr("out"), Duration::from_secs(30))
    }

    fn logs(&self) -> String {
        format!(
            "--- server sidecar log\n{}\n--- client sidecar log\n{}",
            self.server.log_text(),
            self.client.log_text()
        )
    }
}

fn connect(addr: SocketAddr, io_timeout: Duration) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(io_timeout)).unwrap();
    s.set_write_timeout(Some(io_timeout)).unwrap();
    s
}

// ---------------------------------------------------------------------------------------------
// Deterministic data and its hash

const CHUNK: usize = 64 * 1024;
const HUNDRED_MB: usize = 100 * 1024 * 1024;

/// xorshift64*: pseudo-random bytes, the same for the same seed on every run.
struct Bytes {
    state: u64,
}

impl Bytes {
    fn new(seed: u64) -> Self {
        Bytes {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// Fills `buf`, whose length must be a multiple of 8.
    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_exact_mut(8) {
            let mut x = self.state;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.state = x;
            word.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `len` bytes (a multiple of 8) from seed `seed`; returns their SHA-256.
fn write_generated(stream: &mut TcpStream, seed: u64, len: usize) -> std::io::Result<String> {
    let mut gen = Bytes::new(seed);
    let mut hash = Context::new(&SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        gen.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        stream.write_all(&buf[..n])?;
        left -= n;
    }
    Ok(hex(hash.finish().as_ref()))
}

/// The SHA-256 of what [`write_generated`] sends.
fn generated_hash(seed: u64, len: usize) -> String {
    let mut gen = Bytes::new(seed);
    let mut hash = Context::new(&SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        gen.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        left -= n;
    }
    hex(hash.finish().as_ref())
}

/// Reads to EOF (each read bounded by the stream's timeout, the whole by `limit`); returns the
/// byte count and SHA-256.
fn read_hashed(stream: &mut TcpStream, limit: Duration) -> std::io::Result<(usize, String)> {
    let deadline = Instant::now() + limit;
    let mut hash = Context::new(&SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut count = 0;
    loop {
        if Instant::now() > deadline {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("still reading after {limit:?} ({count} bytes so far)"),
            ));
        }
        match stream.read(&mut buf)? {
            0 => return Ok((count, hex(hash.finish().as_ref()))),
            n => {
                hash.update(&buf[..n]);
                count += n;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Apps

/// Reads to EOF, then replies `<count> <sha256>\n` and closes.
fn hash_and_reply(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok((count, hash)) = read_hashed(&mut stream, Duration::from_secs(120)) else {
        return;
    };
    let _ = writeln!(stream, "{count} {hash}");
    let _ = stream.shutdown(Shutdown::Write);
}

/// Sends 100 MB from seed 2 and closes its write side, then waits for the client to close.
fn send_100mb(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(120)));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    if write_generated(&mut stream, 2, HUNDRED_MB).is_ok() {
        let _ = stream.shutdown(Shutdown::Write);
        let _ = read_hashed(&mut stream, Duration::from_secs(120));
    }
}

/// The reply of [`reply_after_eof`] after its first line: 4 MiB from seed 3.
const REPLY_LEN: usize = 4 * 1024 * 1024;

/// Reads the whole request to EOF and only then answers: `<count> <sha256>\n` and 4 MiB.
fn reply_after_eof(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let Ok((count, hash)) = read_hashed(&mut stream, Duration::from_secs(30)) else {
        return;
    };
    if writeln!(stream, "{count} {hash}").is_ok()
        && write_generated(&mut stream, 3, REPLY_LEN).is_ok()
    {
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// What [`slow_source`] sends: 48 chunks of 64 KiB from seed 4, one every 100 ms (about 5 s).
const SLOW_CHUNKS: usize = 48;

fn slow_source(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut gen = Bytes::new(4);
    let mut buf = vec![0u8; CHUNK];
    for _ in 0..SLOW_CHUNKS {
        gen.fill(&mut buf);
        if stream.write_all(&buf).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = stream.shutdown(Shutdown::Write);
    let _ = read_hashed(&mut stream, Duration::from_secs(30));
}

/// Reads to EOF, then neither answers nor closes for 15 s: the other side never finishes.
fn hold_after_eof(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = read_hashed(&mut stream, Duration::from_secs(30));
    thread::sleep(Duration::from_secs(15));
}

// ---------------------------------------------------------------------------------------------
// 1. Bulk data

#[test]
fn a_pair_carries_100_mb_intact_each_way() {
    let _heavy = heavy();
    let upload_app = spawn_app(hash_and_reply);
    let download_app = spawn_app(send_100mb);
    let up = Pair::start(upload_app, "", "");
    let down = Pair::start(download_app, "", "");
    let limit = Duration::from_secs(120);
    let started = Instant::now();

    // Client -> app: the app hashes what arrives and answers with the hash after our FIN.
    let (tx, rx) = mpsc::channel();
    let mut upload = up.connect();
    let tx_up = tx.clone();
    thread::spawn(move || {
        let result = (|| {
            let sent = write_generated(&mut upload, 1, HUNDRED_MB)?;
            upload.shutdown(Shutdown::Write)?;
            let mut reply = String::new();
            upload.read_to_string(&mut reply)?;
            Ok::<_, std::io::Error>((sent, reply))
        })();
        let _ = tx_up.send((
            "upload",
            result.map(|(sent, reply)| (sent, reply, Instant::now())),
        ));
    });
    // App -> client: the client hashes what arrives.
    let mut download = down.connect();
    thread::spawn(move || {
        let result = read_hashed(&mut download, limit).map(|(count, hash)| {
            (
                generated_hash(2, HUNDRED_MB),
                format!("{count} {hash}\n"),
                Instant::now(),
            )
        });
        let _ = tx.send(("download", result));
    });

    for _ in 0..2 {
        let remaining = limit.saturating_sub(started.elapsed());
        let (which, result) = rx.recv_timeout(remaining).unwrap_or_else(|_| {
            panic!(
                "100 MB each way did not finish in {limit:?}\n{}\n{}",
                up.logs(),
                down.logs()
            )
        });
        let (expected_hash, reply, finished) = result
            .unwrap_or_else(|e| panic!("{which} failed: {e}\n{}\n{}", up.logs(), down.logs()));
        assert_eq!(
            reply,
            format!("{HUNDRED_MB} {expected_hash}\n"),
            "{which}: the receiving end saw other bytes than were sent"
        );
        eprintln!(
            "{which}: 100 MiB intact in {:.1} s",
            finished.duration_since(started).as_secs_f64()
        );
    }
    // The sidecars counted every byte each way (the relay counts before the last flush, so wait).
    let counted = |s: &SidecarProcess, listener: &str, flow: &str| {
        s.metric(
            "palisade_sidecar_bytes_total",
            &[("listener", listener), ("flow", flow)],
        )
    };
    assert!(wait_until(Duration::from_secs(5), || {
        counted(&up.server, "in", "peer_to_app") == HUNDRED_MB as f64
            && counted(&down.client, "out", "peer_to_app") == HUNDRED_MB as f64
    }));
}

// ---------------------------------------------------------------------------------------------
// 2. Half-close

#[test]
fn a_half_closed_exchange_still_gets_its_whole_reply() {
    let app = spawn_app(reply_after_eof);
    let pair = Pair::start(app, "", "");
    let mut s = pair.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = b"GET the whole thing, then I am done talking\n";
    s.write_all(request).unwrap();
    // FIN: the app answers only once it has seen EOF, so the reply proves the FIN went through
    // while the other direction stayed open.
    s.shutdown(Shutdown::Write).unwrap();

    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        assert!(line.len() < 200, "no reply line: {line:?}");
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            other => panic!(
                "reply line cut short ({other:?}) after {line:?}\n{}",
                pair.logs()
            ),
        }
    }
    let mut hash = Context::new(&SHA256);
    hash.update(request);
    assert_eq!(
        String::from_utf8_lossy(&line),
        format!("{} {}\n", request.len(), hex(hash.finish().as_ref())),
        "the app saw the request and its EOF"
    );
    let (count, reply_hash) = read_hashed(&mut s, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("reading the reply: {e}\n{}", pair.logs()));
    assert_eq!(count, REPLY_LEN, "the whole reply after our FIN");
    assert_eq!(reply_hash, generated_hash(3, REPLY_LEN));
    drop(s);
    // Both directions finished normally: the server sidecar counts a clean close.
    assert!(
        wait_until(Duration::from_secs(5), || pair.server.metric(
            "palisade_sidecar_connections_closed_total",
            &[("listener", "in"), ("reason", "finished")]
        ) == 1.0),
        "{}",
        pair.server.metrics()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Server speaks first

#[test]
fn the_server_can_speak_first() {
    let app = spawn_app(banner_then_echo);
    let pair = Pair::start(app, "", "");
    let mut s = pair.connect();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let banner = b"220 hello, speak after me\r\n";
    let mut got = vec![0u8; banner.len()];
    // Nothing sent yet: the outbound sidecar must have connected on its own.
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("no banner within 5 s: {e}\n{}", pair.logs()));
    assert_eq!(&got, banner);
    s.write_all(b"and then we talk\n").unwrap();
    let mut echoed = [0u8; 17];
    s.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"and then we talk\n");
}

// ---------------------------------------------------------------------------------------------
// 4. Drain on SIGTERM

#[test]
fn sigterm_lets_a_running_transfer_finish_and_refuses_new_connections() {
    let app = spawn_app(slow_source);
    let mut pair = Pair::start(app, "limits:\n  drain_grace: 20s\n", "");
    let inbound = pair.server.addr("in");
    let mut s = pair.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first)
        .unwrap_or_else(|e| panic!("transfer did not start: {e}\n{}", pair.logs()));

    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let result = read_hashed(&mut s, Duration::from_secs(30));
        let _ = tx.send((result, Instant::now()));
        // Dropping `s` closes our side, which lets the relay finish.
    });
    thread::sleep(Duration::from_millis(500));
    let sigterm = Instant::now();
    pair.server.terminate();

    // The listener closes at once: new connections are refused (or reset straight away).
    let mut refused = false;
    for _ in 0..60 {
        match TcpStream::connect_timeout(&inbound, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused = true,
            Err(e) => panic!("connecting after SIGTERM: {e}"),
            Ok(mut probe) => {
                probe
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                match probe.read(&mut [0u8; 1]) {
                    Ok(0) => refused = true,
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => refused = true,
                    _ => {}
                }
            }
        }
        if refused || sigterm.elapsed() > Duration::from_secs(3) {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        refused,
        "the inbound listener still accepts 3 s after SIGTERM\n{}",
        pair.logs()
    );
    let refused_after = sigterm.elapsed();

    // Draining: /ready says so, the process is still there for the open transfer.
    let (status, body) = pair.server.admin_get("/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(pair.server.metric("palisade_sidecar_draining", &[]), 1.0);
    assert!(pair.server.child.try_wait().unwrap().is_none());

    let (result, finished) = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("transfer did not finish\n{}", pair.logs()));
    let (count, hash) =
        result.unwrap_or_else(|e| panic!("transfer broken by the drain: {e}\n{}", pair.logs()));
    let mut all = vec![0u8; SLOW_CHUNKS * CHUNK];
    Bytes::new(4).fill(&mut all);
    assert_eq!(first[0], all[0]);
    assert_eq!(1 + count, all.len(), "every byte arrived");
    let mut whole = Context::new(&SHA256);
    whole.update(&all[1..]);
    assert_eq!(hash, hex(whole.finish().as_ref()), "and intact");
    assert!(
        finished.duration_since(sigterm) > Duration::from_secs(2),
        "the transfer was still running well after SIGTERM"
    );

    let code = pair.server.wait_exit(Duration::from_secs(25));
    let exited = sigterm.elapsed();
    assert_eq!(code, Some(0), "{}", pair.server.log_text());
    let log = pair.server.log_text();
    assert!(log.contains("drained: every connection finished"), "{log}");
    eprintln!(
        "refused new connections {:.2} s after SIGTERM; transfer finished at {:.1} s; exited 0 at {:.1} s",
        refused_after.as_secs_f64(),
        finished.duration_since(sigterm).as_secs_f64(),
        exited.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Limits under a flood

/// Whether one line goes through the pair and comes back from the echo app.
fn echoed_through(out: SocketAddr) -> bool {
    let attempt = || {
        let mut s = TcpStream::connect_timeout(&out, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"legitimate\n")?;
        let mut reply = [0u8; 11];
        s.read_exact(&mut reply)?;
        Ok::<_, std::io::Error>(&reply == b"legitimate\n")
    };
    matches!(attempt(), Ok(true))
}

/// Retries [`echoed_through`] every 100 ms for up to `within`.
fn served(out: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if echoed_through(out) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn limits_hold_under_a_flood_of_silent_and_idle_connections() {
    let _heavy = heavy();
    rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    let app = spawn_app(echo);
    let mut pair = Pair::start(
        app,
        "limits:\n  handshake_timeout: 1s\n  idle_timeout: 2s\n  max_connections: 1500\n",
        "limits:\n  max_connections: 5000\n",
    );
    let inbound = pair.server.addr("in");
    let out = pair.client.addr("out");
    let started = Instant::now();
    let refused = |server: &SidecarProcess, reason: &str| {
        server.metric(
            "palisade_sidecar_connections_refused_total",
            &[("listener", "in"), ("reason", reason)],
        )
    };
    let closed = |server: &SidecarProcess, reason: &str| {
        server.metric(
            "palisade_sidecar_connections_closed_total",
            &[("listener", "in"), ("reason", reason)],
        )
    };

    // 100 connections straight to the server's mTLS port that never send a byte: they hold
    // slots only until handshake_timeout, and a legitimate client is served beside them.
    let silent: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect_timeout(&inbound, Duration::from_secs(5)).expect("connect"))
        .collect();
    let t = Instant::now();
    assert!(
        served(out, Duration::from_secs(5)),
        "not served beside 100 silent sockets\n{}",
        pair.logs()
    );
    eprintln!(
        "served beside 100 silent sockets in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        wait_until(Duration::from_secs(5), || refused(
            &pair.server,
            "handshake_timeout"
        ) >= 100.0),
        "silent sockets are cut after handshake_timeout\n{}",
        pair.server.metrics()
    );

    // 2,000 app connections to the client sidecar, each of which becomes an mTLS connection to
    // the server. They are opened in batches of 50 and the ones that got through are kept
    // alive with a byte every 400 ms, so that they pile up to the cap however slowly a debug
    // build on 2 cores makes handshakes (a few ms each; without the keep-alive the first ones
    // would reach idle_timeout before the last ones are made). Past 1,500 the server refuses.
    let held: Arc<Mutex<Vec<Arc<TcpStream>>>> = Arc::default();
    let keep_alive = Arc::new(AtomicBool::new(true));
    let pinger = {
        let (held, keep_alive) = (held.clone(), keep_alive.clone());
        thread::spawn(move || {
            // Bounded: the test stops it within seconds; 150 rounds is a minute.
            for _ in 0..150 {
                if !keep_alive.load(Ordering::Relaxed) {
                    break;
                }
                let streams = held.lock().unwrap().clone();
                for s in &streams {
                    let _ = (&**s).write_all(b".");
                }
                thread::sleep(Duration::from_millis(400));
            }
        })
    };
    let mut all = Vec::with_capacity(2000);
    let (mut through, mut turned_away) = (0, 0);
    for _ in 0..40 {
        let batch: Vec<TcpStream> = (0..50)
            .filter_map(|_| {
                let s = TcpStream::connect_timeout(&out, Duration::from_secs(3)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                (&s).write_all(b"k").ok()?;
                Some(s)
            })
            .collect();
        for s in batch {
            let s = Arc::new(s);
            let mut reply = [0u8; 1];
            // The echo of "k": through to the app. EOF or reset: turned away on the way.
            match (&*s).read(&mut reply) {
                Ok(1) => {
                    through += 1;
                    held.lock().unwrap().push(s.clone());
                }
                _ => turned_away += 1,
            }
            all.push(s);
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "the flood is too slow: {through} through, {turned_away} turned away\n{}",
            pair.server.metrics()
        );
    }
    eprintln!(
        "flood: {through} of {} connections through, {turned_away} turned away, in {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    let at_cap = refused(&pair.server, "connection_limit");
    assert!(
        through <= 1500,
        "{through} connections through a server capped at 1,500"
    );
    assert!(
        through >= 1000,
        "most of the flood got through before the cap ({through})\n{}",
        pair.logs()
    );
    assert!(
        at_cap >= (2000 - through - 50) as f64 && at_cap > 0.0,
        "the server refused the connections over its cap ({at_cap} counted)\n{}",
        pair.server.metrics()
    );

    if through == 1500 {
        // Every slot is taken: a legitimate client is turned away too, at once and counted,
        // rather than left hanging.
        let t = Instant::now();
        assert!(!echoed_through(out), "served beyond the cap");
        assert!(t.elapsed() < Duration::from_secs(2), "turned away at once");
        assert!(wait_until(Duration::from_secs(2), || refused(
            &pair.server,
            "connection_limit"
        ) == at_cap + 1.0));
    }

    // Now the flood goes quiet, holding every socket open: idle_timeout cuts it, the slots come
    // free, and a legitimate client is served again while the flood's sockets are still open.
    keep_alive.store(false, Ordering::Relaxed);
    pinger.join().unwrap();
    let quiet = Instant::now();
    assert!(
        wait_until(Duration::from_secs(8), || closed(
            &pair.server,
            "idle_timeout"
        ) >= through as f64),
        "idle connections are closed after idle_timeout\n{}",
        pair.server.metrics()
    );
    eprintln!(
        "idle flood cut {:.1} s after it went quiet",
        quiet.elapsed().as_secs_f64()
    );
    assert!(
        served(out, Duration::from_secs(5)),
        "not served once the idle flood was cut\n{}",
        pair.server.metrics()
    );
    eprintln!(
        "server counted: handshake_timeout {}, connection_limit {}, idle_timeout {}",
        refused(&pair.server, "handshake_timeout"),
        refused(&pair.server, "connection_limit"),
        closed(&pair.server, "idle_timeout")
    );
    assert!(
        pair.server.child.try_wait().unwrap().is_none(),
        "the server sidecar survived"
    );
    assert_eq!(pair.server.admin_get("/live").0, 200);
    drop((silent, all));
    eprintln!("flood test took {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// 6. Idle and half-close timeouts

#[test]
fn an_idle_connection_is_closed_after_idle_timeout() {
    let app = spawn_app(echo);
    let pair = Pair::start(app, "limits:\n  idle_timeout: 1s\n", "");
    let mut s = pair.connect();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    s.write_all(b"ping\n").unwrap();
    let mut reply = [0u8; 5];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ping\n");
    let silent_since = Instant::now();
    let eof = s.read(&mut [0u8; 16]);
    let waited = silent_since.elapsed();
    assert!(
        matches!(eof, Ok(0)),
        "expected EOF, got {eof:?}\n{}",
        pair.logs()
    );
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&waited),
        "closed after {waited:?} of silence"
    );
    assert_eq!(
        pair.server.metric(
            "palisade_sidecar_connections_closed_total",
            &[("listener", "in"), ("reason", "idle_timeout")]
        ),
        1.0
    );
}

#[test]
fn a_half_closed_connection_whose_other_side_never_finishes_is_closed() {
    let app = spawn_app(hold_after_eof);
    let pair = Pair::start(app, "limits:\n  half_close_timeout: 1s\n", "");
    let mut s = pair.connect();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    s.write_all(b"a request nobody answers\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let finished_at = Instant::now();
    let eof = s.read(&mut [0u8; 16]);
    let waited = finished_at.elapsed();
    assert!(
        matches!(eof, Ok(0)),
        "expected EOF, got {eof:?}\n{}",
        pair.logs()
    );
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&waited),
        "closed {waited:?} after our FIN"
    );
    assert_eq!(
        pair.server.metric(
            "palisade_sidecar_connections_closed_total",
            &[("listener", "in"), ("reason", "half_close_timeout")]
        ),
        1.0
    );
}

// ---------------------------------------------------------------------------------------------
// 7. A burst waits in the listen queue

/// Sends a signal to a process; `kill` is in every base system.
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn a_burst_of_connections_waits_for_a_busy_sidecar_instead_of_being_dropped() {
    rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    let app = spawn_app(echo);
    let pair = Pair::start(app, "limits:\n  handshake_timeout: 2s\n", "");
    let inbound = pair.server.addr("in");
    let pid = pair.server.child.id();
    // A stopped process accepts nothing, like a sidecar whose runtime is busy: what arrives
    // meanwhile waits in the kernel's listen queue, if there is room. With the standard
    // library's 128 the kernel drops the SYNs past it, and the peer only retries after 1 s,
    // which is the whole default connect_timeout of a peer sidecar.
    // The kernel holds no more than net.core.somaxconn (4096 on Linux since 5.4).
    let size = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map_or(1000, |max| max.min(1000));
    signal(pid, "-STOP");
    let burst = Instant::now();
    let mut queued = Vec::with_capacity(size);
    let mut stalled = None;
    for i in 0..size {
        match TcpStream::connect_timeout(&inbound, Duration::from_millis(500)) {
            Ok(s) => queued.push(s),
            Err(e) => {
                stalled = Some((i, e));
                break;
            }
        }
    }
    let took = burst.elapsed();
    signal(pid, "-CONT");
    if let Some((i, e)) = stalled {
        panic!("connection {i} of a burst of {size} was not queued: {e}");
    }
    assert!(took < Duration::from_secs(3), "the burst took {took:?}");
    // Once running again, the sidecar works through the queue (these never start a handshake,
    // so they meet handshake_timeout) and serves a legitimate client.
    assert!(
        served(pair.client.addr("out"), Duration::from_secs(10)),
        "not served after the burst\n{}",
        pair.logs()
    );
    assert!(
        wait_until(Duration::from_secs(10), || pair.server.metric(
            "palisade_sidecar_connections_refused_total",
            &[("listener", "in"), ("reason", "handshake_timeout")]
        ) == size as f64),
        "{}",
        pair.server.metrics()
    );
    drop(queued);
}
