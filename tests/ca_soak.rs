//! The identity service under load, bounded to about two minutes: two sidecars that get their
//! 10-second certificates from `palisade ca serve` (each from its own replica, both on one CA
//! directory) and renew them while requests run through them; in the middle an issuer rotation,
//! a whole root rotation (prepare, activate, retire, each when `ca rotate` says it is safe), and
//! the CA killed and restarted. Counted: failed requests and reset connections (both must be 0),
//! renewals, backoff while the CA was away.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const SOAK_LIMIT: Duration = Duration::from_secs(150);
const SERVER_ID: &str = "spiffe://example.org/palisade/ca";

fn sidecar_identity(ca: &TwoLevelCa, url: &str, token_file: &str) -> String {
    format!(
        "identity:\n  ca:\n    url: {url}\n    server_id: {SERVER_ID}\n    bundle: {}\n    join_token_file: {token_file}\n",
        ca.bundle().display()
    )
}

/// One request on a new connection through the frontend's outbound listener: true when the
/// app's answer came back whole.
fn one_request(addr: SocketAddr) -> Result<(), String> {
    let (status, body) = try_http_request(addr, "GET", "/")?;
    if status == 200 && body == "hello from the app\n" {
        Ok(())
    } else {
        Err(format!("status {status}, body {body:?}"))
    }
}

#[test]
fn sidecars_renew_through_issuer_and_root_rotations_and_a_ca_restart_without_a_failed_request() {
    let started = Instant::now();
    let ca = TwoLevelCa::new();
    let extra = ["--leaf-ttl", "10s", "--rate-limit", "0"];
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut replica_a = CaProcess::start_on(&ca.issuer(), &listen, &extra);
    let replica_b = CaProcess::start(&ca.issuer(), &extra);

    std::fs::write(
        ca.path().join("payments.token"),
        ca.token("ns/shop/sa/payments", "10m"),
    )
    .unwrap();
    std::fs::write(
        ca.path().join("frontend.token"),
        ca.token("ns/shop/sa/frontend", "10m"),
    )
    .unwrap();

    let app = spawn_app(http_ok);
    let echo_app = spawn_app(echo);
    let payments = SidecarProcess::start(
        ca.path(),
        "payments.yaml",
        &format!(
            "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [spiffe://example.org/ns/shop/sa/frontend]\n  - name: echo\n    listen: 127.0.0.1:0\n    forward_to: {echo_app}\n    allow: [spiffe://example.org/ns/shop/sa/frontend]\nadmin:\n  listen: 127.0.0.1:0\n",
            sidecar_identity(&ca, &replica_a.url(), "payments.token")
        ),
        &["api", "echo"],
    );
    let frontend = SidecarProcess::start(
        ca.path(),
        "frontend.yaml",
        &format!(
            "{}outbound:\n  - name: to-api\n    listen: 127.0.0.1:0\n    connect_to: {}\n    expect: [spiffe://example.org/ns/shop/sa/payments]\n  - name: to-echo\n    listen: 127.0.0.1:0\n    connect_to: {}\n    expect: [spiffe://example.org/ns/shop/sa/payments]\nadmin:\n  listen: 127.0.0.1:0\n",
            sidecar_identity(&ca, &replica_b.url(), "frontend.token"),
            payments.addr("api"),
            payments.addr("echo"),
        ),
        &["to-api", "to-echo"],
    );
    for sc in [&payments, &frontend] {
        assert!(
            wait_until(Duration::from_secs(10), || sc.admin_get("/ready").0 == 200),
            "a sidecar did not get its first certificate:\n{}",
            sc.log_text()
        );
    }
    // Both replicas issued (each sidecar bootstrapped from its own).
    replica_a.expect_audit("issued", None);
    replica_b.expect_audit("issued", None);

    // The load: new connections back to back, and one connection held open all along.
    let stop = Arc::new(AtomicBool::new(false));
    let ok_count = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let to_api = frontend.addr("to-api");
    let loader = {
        let (stop, ok_count, failures) = (stop.clone(), ok_count.clone(), failures.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && started.elapsed() < SOAK_LIMIT {
                match one_request(to_api) {
                    Ok(()) => {
                        ok_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().unwrap().push(e),
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let held = {
        let stop = stop.clone();
        let addr = frontend.addr("to-echo");
        thread::spawn(move || -> Result<usize, String> {
            let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < SOAK_LIMIT {
                let message = format!("round {rounds}\n");
                writer
                    .write_all(message.as_bytes())
                    .map_err(|e| format!("write: {e}"))?;
                let mut line = String::new();
                reader
                    .read_line(&mut line)
                    .map_err(|e| format!("read: {e}"))?;
                if line != message {
                    return Err(format!("echo gave {line:?} for {message:?}"));
                }
                rounds += 1;
                thread::sleep(Duration::from_millis(100));
            }
            Ok(rounds)
        })
    };

    let pause = |d: u64| thread::sleep(Duration::from_secs(d));
    let rotate = |step: &str, extra: &[&str]| {
        let mut args = vec![
            "ca",
            "rotate",
            step,
            "--root-dir",
            "root",
            "--ca-dir",
            "issuer",
        ];
        args.extend_from_slice(extra);
        palisade(&args, ca.path())
    };
    pause(6);

    // Issuer rotation: a new issuer under the same root.
    ok(palisade(
        &[
            "ca",
            "init-issuer",
            "--root-dir",
            "root",
            "--ca-dir",
            "issuer",
            "--ttl",
            "2d",
        ],
        ca.path(),
    ));
    pause(6);

    // Root rotation, step 1; step 2 is refused until a leaf lifetime (+ margin) has passed.
    ok(rotate("prepare", &["--leaf-ttl", "10s"]));
    let prepared_at = Instant::now();
    let early = rotate("activate", &[]);
    assert!(
        !early.status.success(),
        "activate right after prepare must be refused"
    );
    assert!(String::from_utf8_lossy(&early.stderr).contains("safe from"));
    pause(4);

    // The CA goes away for a while (replica A, which payments renews from) and comes back.
    let failures_before = payments.metric(
        "palisade_sidecar_identity_renewals_total",
        &[("result", "failure")],
    );
    replica_a.kill();
    let backed_off = wait_until(Duration::from_secs(12), || {
        payments.metric(
            "palisade_sidecar_identity_renewals_total",
            &[("result", "failure")],
        ) > failures_before
            && payments.metric("palisade_sidecar_identity_renewal_failures_in_a_row", &[]) >= 1.0
    });
    assert!(
        backed_off,
        "payments did not try and back off while its CA was down:\n{}",
        payments.log_text()
    );
    let replica_a = CaProcess::start_on(&ca.issuer(), &listen, &extra);
    assert!(
        wait_until(Duration::from_secs(10), || {
            payments.metric("palisade_sidecar_identity_renewal_failures_in_a_row", &[]) == 0.0
        }),
        "payments did not renew once its CA was back:\n{}",
        payments.log_text()
    );
    replica_a.expect_audit("issued", None);

    // Step 2 when it is safe.
    assert!(
        wait_until(Duration::from_secs(30), || rotate("activate", &[])
            .status
            .success()),
        "activate stayed refused"
    );
    let activated = prepared_at.elapsed();
    // Step 3 is refused at once, allowed a leaf lifetime + skew later.
    assert!(!rotate("retire", &[]).status.success());
    assert!(
        wait_until(Duration::from_secs(80), || rotate("retire", &[])
            .status
            .success()),
        "retire stayed refused"
    );
    let bundle = std::fs::read_to_string(ca.bundle()).unwrap();
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        1,
        "one root left"
    );
    // The sidecars picked up the one-root bundle and still talk.
    assert!(wait_until(Duration::from_secs(15), || {
        payments.metric("palisade_sidecar_bundle_roots", &[]) == 1.0
            && frontend.metric("palisade_sidecar_bundle_roots", &[]) == 1.0
    }));
    pause(3);

    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    let rounds = held.join().unwrap();
    let failures = failures.lock().unwrap().clone();
    let renewals = |sc: &SidecarProcess| {
        sc.metric(
            "palisade_sidecar_identity_renewals_total",
            &[("result", "success")],
        )
    };
    println!(
        "soak: {} s, {} requests ok, {} failed, held connection {} rounds ({}), renewals payments {} frontend {}, activate after {:?}",
        started.elapsed().as_secs(),
        ok_count.load(Ordering::Relaxed),
        failures.len(),
        rounds.as_ref().map_or(0, |r| *r),
        if rounds.is_ok() { "never reset" } else { "BROKEN" },
        renewals(&payments),
        renewals(&frontend),
        activated,
    );
    assert!(
        failures.is_empty(),
        "failed requests: {failures:?}\nfrontend:\n{}\npayments:\n{}",
        frontend.log_text(),
        payments.log_text()
    );
    assert!(rounds.is_ok(), "the held connection broke: {rounds:?}");
    assert!(ok_count.load(Ordering::Relaxed) > 500);
    // 10-second certificates renewed at about half their life over ~90 s.
    assert!(renewals(&payments) >= 8.0 && renewals(&frontend) >= 8.0);
    assert!(started.elapsed() < SOAK_LIMIT);
}
