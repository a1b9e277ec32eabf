//! One request to the CA service, from its bytes to an answer: where a CSR travels.
//!
//! sign:  rate limit → an `Authorization` header, or refused before the body is read → body
//!        (bounded in size and time) → CSR checked → credential (join token consumed, or
//!        service-account JWT verified) → the ID asked for, if any, must match → a signing slot →
//!        issue → audit line.
//! renew: rate limit → the TLS client certificate verified to the bundle now (expired is its
//!        own refusal) → same ID only → body → CSR checked → a signing slot → issue → audit line.
//!
//! On a connection without a verified client certificate, the body must arrive within what is
//! left of `request_timeout` (head and body together), and the connection stays sheddable while
//! it is read ([`Conn::work`]): a client that trickles bodies holds nothing the service cannot
//! take back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use palisade_ca::{CheckedCsr, IssueError, IssuedCert, LeafRequest};
use palisade_identity::ca_api::{
    ErrorBody, ErrorResponse, SignResponse, BEARER_SCHEME, BUNDLE_PATH, JOIN_TOKEN_SCHEME,
    MAX_REQUEST_BYTES, RENEW_PATH, SIGN_PATH, SPIFFE_ID_HEADER,
};
use palisade_identity::{PeerRole, SpiffeId, SvidError};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

use crate::audit::{bounded, AuditEvent};
use crate::metrics::IssuedLabels;
use crate::refusal::Refusal;
use crate::State;
use palisade_identity::rfc3339;

/// The TLS client certificates of the connection a request came on (empty: none presented), and
/// their verification, made once per connection and CA material: a client renewing several
/// times over one kept-alive connection pays for the chain once, and a verification is never
/// used past the chain's first NotAfter or after the bundle changed.
pub(crate) struct Peer {
    chain: Vec<CertificateDer<'static>>,
    /// Who the leaf says it is, for the audit trail (`<ID> serial <serial>`), read once per
    /// connection; not verified (verification is [`Peer::verify`]).
    subject: Option<String>,
    verified: std::sync::Mutex<Option<VerifiedChain>>,
    /// Requests refused on this connection so far: past the limit, it is closed.
    refusals: std::sync::atomic::AtomicU32,
}

struct VerifiedChain {
    material: Arc<crate::Material>,
    id: SpiffeId,
    valid_until: i64,
}

impl Peer {
    pub(crate) fn new(chain: Vec<CertificateDer<'static>>) -> Self {
        let subject = chain.first().and_then(|der| {
            let (_, leaf) = x509_parser::parse_x509_certificate(der).ok()?;
            let id = palisade_identity::spiffe_id_of(&leaf)
                .map(|id| id.to_string())
                .unwrap_or_else(|_| "no SPIFFE ID".into());
            Some(format!(
                "{} serial {}",
                bounded(&id),
                palisade_identity::serial_hex(leaf.raw_serial())
            ))
        });
        Peer {
            chain,
            subject,
            verified: std::sync::Mutex::new(None),
            refusals: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Whether the client presented a certificate at all.
    pub(crate) fn presented(&self) -> bool {
        !self.chain.is_empty()
    }

    /// The chain's SPIFFE ID if it verifies to `material`'s bundle now.
    pub(crate) fn verify(&self, material: &Arc<crate::Material>) -> Result<SpiffeId, SvidError> {
        let now = UnixTime::now();
        let now_secs = now.as_secs() as i64;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = verified.as_ref() {
            if Arc::ptr_eq(&v.material, material) && now_secs <= v.valid_until {
                return Ok(v.id.clone());
            }
        }
        let id =
            palisade_identity::verify_svid(&self.chain, &material.bundles, PeerRole::Client, now)?;
        let valid_until = self
            .chain
            .iter()
            .filter_map(|der| palisade_identity::not_after(der).ok())
            .map(|t| t.unix_timestamp())
            .min()
            .unwrap_or(0);
        *verified = Some(VerifiedChain {
            material: material.clone(),
            id: id.clone(),
            valid_until,
        });
        Ok(id)
    }
}

pub(crate) type PeerChain = Arc<Peer>;

/// One connection as its requests see it: its peer, its slot, and how long a request may take.
pub(crate) struct Conn {
    pub(crate) peer: PeerChain,
    slot: Arc<crate::connections::Slot>,
    /// Whether the connection holds a reserved slot (its client certificate verified at the
    /// handshake): it is busy, never shed, from a request's head to its answer.
    authenticated: bool,
    /// For a connection without a verified client certificate: the time for a whole request,
    /// head and body together, from when the connection was ready for it.
    deadline: Option<Duration>,
    ready_since: std::sync::Mutex<Instant>,
}

impl Conn {
    pub(crate) fn new(
        peer: PeerChain,
        slot: Arc<crate::connections::Slot>,
        authenticated: bool,
        deadline: Option<Duration>,
    ) -> Self {
        Conn {
            peer,
            slot,
            authenticated,
            deadline,
            ready_since: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// The answer has been given: the time for the next request starts now.
    pub(crate) fn ready_again(&self) {
        *self.ready_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// A request on an authenticated connection is busy from its head on (`None`: the
    /// connection was shed); on a general one it is not (yet): see [`Conn::work`].
    pub(crate) fn start(&self) -> Option<Option<crate::connections::Busy>> {
        if self.authenticated {
            self.slot.busy().map(Some)
        } else if self.slot.shed().is_cancelled() {
            None
        } else {
            Some(None)
        }
    }

    /// The request's body has arrived: from now on the service works on it, and the connection
    /// may not be shed until the answer. Refused (`busy`) if it was shed while the body was read,
    /// before anything (a join token) is spent.
    fn work(&self) -> Result<Option<crate::connections::Busy>, Refusal> {
        if self.authenticated {
            // Busy since its head (`start`).
            Ok(None)
        } else {
            self.slot.busy().map(Some).ok_or(Refusal::Busy)
        }
    }

    /// How long the body may take, and the refusal if it does not arrive within it.
    fn body_time(&self, body_timeout: Duration) -> (Duration, Refusal) {
        let Some(deadline) = self.deadline else {
            return (body_timeout, Refusal::BodyTimeout(body_timeout.as_secs()));
        };
        let since = self
            .ready_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        let left = deadline.saturating_sub(since);
        if left < body_timeout {
            (left, Refusal::RequestDeadline(deadline))
        } else {
            (body_timeout, Refusal::BodyTimeout(body_timeout.as_secs()))
        }
    }
}

pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    client: SocketAddr,
    conn: Arc<Conn>,
) -> Response<Full<Bytes>> {
    let chain = conn.peer.clone();
    let mut response = route(state.clone(), req, client, &conn).await;
    secure_headers(response.headers_mut());
    // A request whose body did not arrive in time ends its connection (the rest of the body is
    // never read).
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    // A client that is refused again and again on one connection (pipelined requests cost it
    // nothing) is cut off: it may reconnect, within its connection cap and rate.
    if response.status().is_client_error() || response.status().is_server_error() {
        let refused = chain
            .refusals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(1);
        if refused >= state.refusals_per_connection {
            response.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            if refused == state.refusals_per_connection {
                state
                    .metrics
                    .connection(&state.metrics.connections_closed, "refusals");
                if let Some(left_out) = state.log_budget.refusals.take() {
                    tracing::info!(
                        %client, refused, left_out,
                        "closing a connection after too many refused requests (left_out: lines like this one not logged since the last)"
                    );
                }
            }
        }
    }
    response
}

/// On every answer: an API that no browser should render, frame, cache or reach over plain
/// HTTP (what an external audit such as testssl.sh checks for).
fn secure_headers(headers: &mut hyper::HeaderMap) {
    use hyper::header::{
        CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
        X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    for (name, value) in [
        (STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
        (
            CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (REFERRER_POLICY, "no-referrer"),
        (CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, hyper::header::HeaderValue::from_static(value));
    }
}

async fn route(
    state: Arc<State>,
    req: Request<Incoming>,
    client: SocketAddr,
    conn: &Conn,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/live") => text(StatusCode::OK, "live\n".into()),
        (Method::GET | Method::HEAD, "/ready") => match state.not_ready() {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        (Method::GET | Method::HEAD, BUNDLE_PATH) => {
            state.metrics.request("bundle", "ok");
            bundle(&state, &req)
        }
        (Method::POST, SIGN_PATH) => {
            let mut audit = AuditEvent::new("refused", "sign", client);
            let outcome = sign(&state, req, client, conn, &mut audit).await;
            finish(&state, "sign", client, outcome, audit)
        }
        (Method::POST, RENEW_PATH) => {
            let mut audit = AuditEvent::new("refused", "renew", client);
            audit.credential = "mtls";
            let outcome = renew(&state, req, client, conn, &mut audit).await;
            finish(&state, "renew", client, outcome, audit)
        }
        (_, "/live" | "/ready" | BUNDLE_PATH | SIGN_PATH | RENEW_PATH) => {
            refusal_response(&Refusal::MethodNotAllowed)
        }
        _ => refusal_response(&Refusal::NotFound),
    }
}

async fn sign(
    state: &State,
    req: Request<Incoming>,
    client: SocketAddr,
    conn: &Conn,
    audit: &mut AuditEvent,
) -> Result<IssuedCert, Refusal> {
    if !state.rate.allow(client.ip()) {
        return Err(Refusal::RateLimited);
    }
    let asked = asked_id(&req)?;
    // Before the body: a request that cannot succeed does not get to hold the connection while
    // its body trickles in.
    let Some(authorization) = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("").to_owned())
    else {
        return Err(Refusal::NoCredential);
    };
    let csr = read_csr(state, req, conn).await?;
    let _busy = conn.work()?;
    // Everything that may make the caller retry comes before the credential is spent: a join
    // token used up by a request that then fails with "busy" could never be retried.
    let slot = state.slots.acquire().await.ok_or(Refusal::Busy)?;
    let material = state.material.load_full();
    if OffsetDateTime::now_utc() >= material.ca.not_after() {
        return Err(Refusal::Unavailable(format!(
            "the signing CA expired at {}",
            rfc3339(material.ca.not_after())
        )));
    }
    let trust_domain = material.ca.trust_domain().clone();
    let (scheme, credential) = authorization
        .split_once(' ')
        .map(|(s, c)| (s, c.trim()))
        .unwrap_or((authorization.as_str(), ""));
    let id = if scheme.eq_ignore_ascii_case(JOIN_TOKEN_SCHEME) {
        audit.credential = "join_token";
        audit.subject = Some(format!("token {}", token_fingerprint(credential)));
        state
            .tokens
            .consume(credential, OffsetDateTime::now_utc())?
    } else if scheme.eq_ignore_ascii_case(BEARER_SCHEME) {
        audit.credential = "service_account";
        let verifier = state
            .service_accounts
            .as_ref()
            .ok_or(Refusal::ServiceAccountsNotConfigured)?;
        let account = verifier
            .verify(credential, &trust_domain, std::time::SystemTime::now())
            .inspect_err(|refusal| {
                // Perhaps a key the cluster has just rotated in: fetch the keys (bounded).
                if matches!(
                    refusal,
                    crate::service_account::TokenRefusal::UnknownKey { .. }
                ) {
                    state.jwks_wanted.notify_one();
                }
            })?;
        audit.subject = Some(bounded(&match &account.pod {
            Some(pod) => format!("{}/{} pod {pod}", account.namespace, account.name),
            None => format!("{}/{}", account.namespace, account.name),
        }));
        account.spiffe_id
    } else {
        return Err(Refusal::UnsupportedCredential);
    };
    audit.spiffe_id = Some(id.to_string());
    check_id(state, &id, asked)?;
    issue(state, &material, &csr, id, slot)
}

async fn renew(
    state: &State,
    req: Request<Incoming>,
    client: SocketAddr,
    conn: &Conn,
    audit: &mut AuditEvent,
) -> Result<IssuedCert, Refusal> {
    let chain = &conn.peer;
    if !state.rate.allow(client.ip()) {
        return Err(Refusal::RateLimited);
    }
    let asked = asked_id(&req)?;
    if chain.chain.is_empty() {
        audit.credential = "none";
        return Err(Refusal::RenewWithoutCertificate);
    }
    audit.subject = chain.subject.clone();
    let material = state.material.load_full();
    let id = chain.verify(&material).map_err(|error| match error {
        SvidError::Expired(_) => Refusal::RenewCertificateExpired(error),
        other => Refusal::RenewCertificateUntrusted(other),
    })?;
    audit.spiffe_id = Some(id.to_string());
    check_id(state, &id, asked)?;
    let csr = read_csr(state, req, conn).await?;
    let _busy = conn.work()?;
    let slot = state.slots.acquire().await.ok_or(Refusal::Busy)?;
    issue(state, &material, &csr, id, slot)
}

/// The ID a credential grants may be issued: it is the one asked for (if any), and it is not the
/// CA service's own (whoever held that could pose as the CA to every workload and collect their
/// join tokens).
fn check_id(state: &State, id: &SpiffeId, asked: Option<SpiffeId>) -> Result<(), Refusal> {
    if let Some(asked) = asked {
        if &asked != id {
            return Err(Refusal::OtherId {
                granted: id.to_string(),
                asked: asked.to_string(),
            });
        }
    }
    if id == &state.server.id {
        return Err(Refusal::ReservedId(id.to_string()));
    }
    Ok(())
}

fn issue(
    state: &State,
    material: &crate::Material,
    csr: &CheckedCsr,
    id: SpiffeId,
    _slot: tokio::sync::SemaphorePermit<'_>,
) -> Result<IssuedCert, Refusal> {
    material
        .ca
        .issue_for_csr(csr, &LeafRequest::new(id, state.leaf_ttl))
        .map_err(|error| match error {
            IssueError::CaExpired(_) => Refusal::Unavailable(error.to_string()),
            other => Refusal::Csr(other),
        })
}

/// The body, bounded in size (by Content-Length, then while reading) and in time (the body
/// timeout, and on a connection without a verified client certificate what is left of its
/// request deadline), as a checked CSR: PEM if it looks like PEM, else DER. A connection shed
/// meanwhile ends the read.
async fn read_csr(
    state: &State,
    req: Request<Incoming>,
    conn: &Conn,
) -> Result<CheckedCsr, Refusal> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return Err(Refusal::TooLarge(MAX_REQUEST_BYTES));
    }
    let limited = Limited::new(req.into_body(), MAX_REQUEST_BYTES);
    let (time, late) = conn.body_time(state.body_timeout);
    let read = tokio::time::timeout(time, limited.collect());
    let body = tokio::select! {
        _ = conn.slot.shed().cancelled() => return Err(Refusal::Busy),
        read = read => match read {
            Err(_) => return Err(late),
            Ok(Err(_)) => return Err(Refusal::TooLarge(MAX_REQUEST_BYTES)),
            Ok(Ok(collected)) => collected.to_bytes(),
        },
    };
    csr_from_body(&body)
}

/// The body of a sign or renew request, once read, as a checked CSR: PEM if it looks like PEM,
/// else DER. Apart from the reading (bounded in size and time) so that tests and the fuzz target
/// (`fuzz/fuzz_targets/ca_csr.rs`) reach it without HTTP.
pub fn csr_from_body(body: &[u8]) -> Result<CheckedCsr, Refusal> {
    let der = if body.starts_with(b"-----BEGIN") {
        palisade_identity::pem::csr_from_pem(body)
            .map(|der| der.as_ref().to_vec())
            .ok_or(Refusal::Csr(IssueError::BadCsr))?
    } else {
        body.to_vec()
    };
    CheckedCsr::check(&der).map_err(Refusal::Csr)
}

fn asked_id(req: &Request<Incoming>) -> Result<Option<SpiffeId>, Refusal> {
    req.headers()
        .get(SPIFFE_ID_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| SpiffeId::parse(s).ok())
                .ok_or(Refusal::BadIdHeader)
        })
        .transpose()
}

/// A join token named in the audit trail by the start of its SHA-256: the start of its record's
/// file name in the token store, so an operator can match the two; useless to a log reader.
fn token_fingerprint(token: &str) -> String {
    if token.len() > 256 {
        return "(oversized)".into();
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn finish(
    state: &State,
    endpoint: &'static str,
    client: SocketAddr,
    outcome: Result<IssuedCert, Refusal>,
    mut audit: AuditEvent,
) -> Response<Full<Bytes>> {
    match outcome {
        Ok(issued) => {
            let material = state.material.load_full();
            audit.event = "issued";
            let serial = palisade_identity::serial_hex(&issued.serial);
            audit.serial = Some(serial.clone());
            audit.not_after = Some(rfc3339(issued.not_after));
            if let Err(refusal) = audit_outcome(state, endpoint, true, client, &audit) {
                state.metrics.request(endpoint, refusal.code());
                tracing::error!(
                    endpoint,
                    serial,
                    spiffe_id = audit.spiffe_id.as_deref().unwrap_or(""),
                    "signed a certificate but did not deliver it: its audit line cannot be written"
                );
                return refusal_response(&refusal);
            }
            state.metrics.request(endpoint, "ok");
            state
                .metrics
                .issued
                .get_or_create(&IssuedLabels {
                    credential: audit.credential,
                })
                .inc();
            let body = SignResponse {
                spiffe_id: audit.spiffe_id.clone().unwrap_or_default(),
                certificate_chain: issued.chain_pem(),
                bundle: material.bundle_pem.clone(),
                serial,
                not_before: issued.not_before.unix_timestamp(),
                not_after: issued.not_after.unix_timestamp(),
            };
            json(
                StatusCode::OK,
                serde_json::to_vec(&body).unwrap_or_default(),
            )
        }
        Err(refusal) => {
            audit.code = Some(refusal.code());
            audit.reason = Some(refusal.to_string());
            state.metrics.request(endpoint, refusal.code());
            tracing::debug!(endpoint, code = refusal.code(), client = %audit.client, "refused");
            let _ = audit_outcome(state, endpoint, false, client, &audit);
            refusal_response(&refusal)
        }
    }
}

/// An issuance is delivered only once its audit line is written (fail closed: a CA issues nothing
/// it cannot account for); a refusal's line is written within the audit trail's budget.
fn audit_outcome(
    state: &State,
    endpoint: &'static str,
    issued: bool,
    client: SocketAddr,
    audit: &AuditEvent,
) -> Result<(), Refusal> {
    let written = if issued {
        state
            .audit
            .write(audit)
            .map(|()| crate::audit::Written::Yes)
    } else {
        state.audit.refusal(audit, client.ip())
    };
    match written {
        Ok(crate::audit::Written::Yes) => Ok(()),
        Ok(crate::audit::Written::LeftOut) => {
            state
                .metrics
                .audit_left_out
                .get_or_create(&crate::metrics::LeftOutLabels {
                    code: audit.code.unwrap_or("unknown"),
                })
                .inc();
            Ok(())
        }
        Err(error) => {
            state.metrics.audit_write_failures.inc();
            if let Some(left_out) = state.log_budget.audit.take() {
                tracing::error!(
                    %error, endpoint, issued, left_out,
                    "cannot write the audit line; issuances are refused until it can be written (left_out: lines like this one not logged since the last)"
                );
            }
            if issued {
                Err(Refusal::AuditUnavailable)
            } else {
                Ok(())
            }
        }
    }
}

fn bundle(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let material = state.material.load_full();
    let wants_json = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
        || req.uri().query().is_some_and(|q| q.contains("format=jwks"));
    if wants_json {
        json(StatusCode::OK, material.bundle_jwks.clone().into_bytes())
    } else {
        let mut response = Response::new(Full::new(Bytes::from(material.bundle_pem.clone())));
        response.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/x-pem-file"),
        );
        response
    }
}

pub(crate) fn refusal_response(refusal: &Refusal) -> Response<Full<Bytes>> {
    let body = ErrorResponse {
        error: ErrorBody {
            code: refusal.code().to_owned(),
            message: refusal.to_string(),
        },
    };
    json(
        refusal.status(),
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
