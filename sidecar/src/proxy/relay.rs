//! Moving bytes both ways between two connections: bounded buffers (a full buffer stops reading,
//! which is TCP backpressure), a half-close passed on each way (one side's EOF becomes a shutdown
//! of the other side's write half, while the reverse direction keeps flowing), an idle timeout,
//! and a half-close timeout once one direction has finished.
//!
//! One future polls both directions, so no locks or extra tasks sit on the data path.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A relay's timeouts and buffer size, from the configuration's `limits`.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// No byte either way for this long ends the relay.
    pub idle_timeout: Duration,
    /// Once one direction has finished, no byte for this long ends the relay (capped at
    /// `idle_timeout`).
    pub half_close_timeout: Duration,
    /// Bytes buffered per direction; allocated on a direction's first read.
    pub buffer_size: usize,
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides finished sending; everything was delivered.
    Finished,
    /// No byte moved either way for `idle_timeout`.
    IdleTimeout,
    /// One direction had finished and nothing moved for `half_close_timeout`.
    HalfCloseTimeout,
    /// A TLS side ended without close_notify: what it sent may have been cut short by someone
    /// on the path, so the relay stops instead of passing on a clean end of stream.
    Truncated,
    /// Reading or writing failed.
    Error(io::Error),
}

impl RelayEnd {
    /// The read or write that failed, for the log.
    pub fn error(&self) -> Option<&io::Error> {
        match self {
            RelayEnd::Error(e) => Some(e),
            _ => None,
        }
    }

    /// The label used in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            RelayEnd::Finished => "finished",
            RelayEnd::IdleTimeout => "idle_timeout",
            RelayEnd::HalfCloseTimeout => "half_close_timeout",
            RelayEnd::Truncated => "truncated",
            RelayEnd::Error(_) => "error",
        }
    }
}

/// Closes both sides the way `end` calls for. Our own timeouts end the TLS side with a
/// close_notify, so the peer's sidecar can tell them from a truncation; a truncation resets the
/// plaintext side, so the app cannot take a cut-short stream for a whole one.
pub(crate) async fn end_connections<T>(end: &RelayEnd, tls: &mut T, plain: &tokio::net::TcpStream)
where
    T: AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::AsyncWriteExt;
    match end {
        RelayEnd::IdleTimeout | RelayEnd::HalfCloseTimeout => {
            let _ = tokio::time::timeout(CLOSE_NOTIFY_TIMEOUT, tls.shutdown()).await;
        }
        RelayEnd::Truncated => {
            let _ = plain.set_zero_linger();
        }
        RelayEnd::Finished | RelayEnd::Error(_) => {}
    }
}

/// How long sending a close_notify may take before the connection is dropped anyway.
const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(1);

impl From<io::Error> for RelayEnd {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            RelayEnd::Truncated
        } else {
            RelayEnd::Error(e)
        }
    }
}

/// The first read of a direction, before it has a buffer (limits.buffer_size is at least 1 KiB).
const FIRST_READ: usize = 1024;

/// One direction: read from one side into a buffer, write the buffer to the other. The buffer is
/// allocated when the first bytes arrive, so a direction that never carries a byte costs no
/// memory.
struct Pipe {
    buf: Option<Box<[u8]>>,
    size: usize,
    start: usize,
    end: usize,
    read_eof: bool,
    unflushed: bool,
    finished: bool,
    counter: Counter,
}

impl Pipe {
    fn new(size: usize, counter: Counter) -> Self {
        Pipe {
            buf: None,
            size,
            start: 0,
            end: 0,
            read_eof: false,
            unflushed: false,
            finished: false,
            counter,
        }
    }

    /// Moves bytes until the reader has nothing more right now (Pending) or has finished and the
    /// writer has been shut down (Ready). Sets `active` whenever a byte moved.
    fn poll_transfer<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        active: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.start == self.end && !self.read_eof {
                // Until the first byte, read into the stack: a direction (or a connection) that
                // stays idle never holds a buffer.
                let mut first = [0u8; FIRST_READ];
                let read_into: &mut [u8] = match self.buf.as_deref_mut() {
                    Some(buf) => buf,
                    None => &mut first,
                };
                let mut read_buf = ReadBuf::new(read_into);
                match reader.as_mut().poll_read(cx, &mut read_buf) {
                    Poll::Ready(Ok(())) => {
                        let n = read_buf.filled().len();
                        if n == 0 {
                            self.read_eof = true;
                        } else {
                            if self.buf.is_none() {
                                let mut buf = vec![0; self.size].into_boxed_slice();
                                buf[..n].copy_from_slice(&first[..n]);
                                self.buf = Some(buf);
                            }
                            self.start = 0;
                            self.end = n;
                            *active = true;
                        }
                    }
                    // rustls's word for a TCP end without close_notify (plain sockets never say
                    // it): not a clean end, so not passed on as one.
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing more to read for now: push out what the writer buffered.
                        if self.unflushed {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.start < self.end {
                let buf = self
                    .buf
                    .as_deref()
                    .expect("unwritten bytes live in the buffer");
                let n = ready!(writer.as_mut().poll_write(cx, &buf[self.start..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                self.counter.inc_by(n as u64);
                self.unflushed = true;
                *active = true;
            }
            if self.read_eof {
                // Flushes, then half-closes: a FIN (and a TLS close_notify) for the other side.
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.finished = true;
                self.buf = None;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Relays between `a` (the side that connected to us) and `b` (the side we connected to) until
/// both directions finish, a timeout fires, or an error occurs.
pub struct Relay<'s, A: ?Sized, B: ?Sized> {
    a: &'s mut A,
    b: &'s mut B,
    a_to_b: Pipe,
    b_to_a: Pipe,
    limits: RelayLimits,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<'s, A, B> Relay<'s, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    /// `a_to_b` and `b_to_a` count the bytes moved each way.
    pub fn new(
        a: &'s mut A,
        b: &'s mut B,
        limits: RelayLimits,
        a_to_b: Counter,
        b_to_a: Counter,
    ) -> Self {
        let now = Instant::now();
        Relay {
            a,
            b,
            a_to_b: Pipe::new(limits.buffer_size, a_to_b),
            b_to_a: Pipe::new(limits.buffer_size, b_to_a),
            limits,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
        }
    }

    fn timeout(&self) -> Duration {
        if self.a_to_b.finished || self.b_to_a.finished {
            self.limits.half_close_timeout.min(self.limits.idle_timeout)
        } else {
            self.limits.idle_timeout
        }
    }
}

impl<A, B> Future for Relay<'_, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    type Output = RelayEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        let this = self.get_mut();
        let mut active = false;
        let was_half_closed = this.a_to_b.finished || this.b_to_a.finished;
        if !this.a_to_b.finished {
            if let Poll::Ready(Err(e)) = this.a_to_b.poll_transfer(
                cx,
                Pin::new(&mut *this.a),
                Pin::new(&mut *this.b),
                &mut active,
            ) {
                return Poll::Ready(RelayEnd::from(e));
            }
        }
        if !this.b_to_a.finished {
            if let Poll::Ready(Err(e)) = this.b_to_a.poll_transfer(
                cx,
                Pin::new(&mut *this.b),
                Pin::new(&mut *this.a),
                &mut active,
            ) {
                return Poll::Ready(RelayEnd::from(e));
            }
        }
        if this.a_to_b.finished && this.b_to_a.finished {
            return Poll::Ready(RelayEnd::Finished);
        }
        let half_closed = this.a_to_b.finished || this.b_to_a.finished;
        if active {
            // Only note the time here; the timer is re-armed lazily when it fires, so busy
            // connections do not touch the timer wheel for every chunk.
            this.last_activity = Instant::now();
        }
        if half_closed != was_half_closed {
            // The half-close timeout is shorter than the idle one: re-arm now.
            this.last_activity = Instant::now();
            let deadline = this.last_activity + this.timeout();
            this.timer.as_mut().reset(deadline);
        }
        loop {
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = this.last_activity + this.timeout();
            if Instant::now() >= deadline {
                return Poll::Ready(if half_closed {
                    RelayEnd::HalfCloseTimeout
                } else {
                    RelayEnd::IdleTimeout
                });
            }
            this.timer.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    fn limits(idle_ms: u64, half_close_ms: u64) -> RelayLimits {
        RelayLimits {
            idle_timeout: Duration::from_millis(idle_ms),
            half_close_timeout: Duration::from_millis(half_close_ms),
            buffer_size: 1024,
        }
    }

    #[tokio::test]
    async fn moves_bytes_both_ways_and_passes_half_close_on() {
        let (mut client, mut a) = duplex(64);
        let (mut b, mut server) = duplex(64);
        let (up, down) = (Counter::default(), Counter::default());
        let relay = tokio::spawn({
            let (up, down) = (up.clone(), down.clone());
            async move { Relay::new(&mut a, &mut b, limits(5000, 5000), up, down).await }
        });
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, payload, "EOF arrives only after every byte");
        server
            .write_all(b"reply after the client's FIN")
            .await
            .unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply after the client's FIN");
        assert!(matches!(relay.await.unwrap(), RelayEnd::Finished));
        assert_eq!(up.get(), 100_000);
        assert_eq!(down.get(), 28);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_time_out() {
        let (_client, mut a) = duplex(64);
        let (mut b, _server) = duplex(64);
        let end = Relay::new(
            &mut a,
            &mut b,
            limits(1000, 500),
            Counter::default(),
            Counter::default(),
        )
        .await;
        assert!(matches!(end, RelayEnd::IdleTimeout), "{end:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_closed_connection_times_out_sooner() {
        let (mut client, mut a) = duplex(64);
        let (mut b, _server) = duplex(64);
        client.shutdown().await.unwrap();
        let started = Instant::now();
        let end = Relay::new(
            &mut a,
            &mut b,
            limits(10_000, 500),
            Counter::default(),
            Counter::default(),
        )
        .await;
        assert!(matches!(end, RelayEnd::HalfCloseTimeout), "{end:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_a_connection_alive() {
        let (mut client, mut a) = duplex(64);
        let (mut b, mut server) = duplex(64);
        let relay = tokio::spawn(async move {
            Relay::new(
                &mut a,
                &mut b,
                limits(1000, 1000),
                Counter::default(),
                Counter::default(),
            )
            .await
        });
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            server.read_exact(&mut one).await.unwrap();
        }
        assert!(
            !relay.is_finished(),
            "3 s of traffic every 0.6 s outlives a 1 s idle timeout"
        );
        let end = relay.await.unwrap();
        assert!(matches!(end, RelayEnd::IdleTimeout));
    }
}
