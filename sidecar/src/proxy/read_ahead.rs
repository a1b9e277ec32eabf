//! A socket wrapper that reads ahead in large chunks. rustls asks its transport for at most
//! 4 KiB at a time, so a 16 KiB TLS record costs four `read` system calls; reading ahead 64 KiB
//! at once turns those into one call and a few copies from memory. Writes pass straight through
//! (vectored, so rustls can send several records in one call).
//!
//! Until the handshake is over the peer is not authenticated, so the wrapper starts out reading
//! straight through, without a buffer of its own, and counts what the peer sends: once it has
//! read `handshake_budget` bytes it reads no more (the read stays pending and the handshake
//! timeout ends the connection), which bounds what rustls buffers for an unauthenticated peer.
//! Stopping, rather than failing, matters: a peer may send application data right behind its
//! Finished message, and rustls reads on until it holds a whole record of it (up to 16 KiB);
//! what it already holds completes the handshake. [`ReadAhead::handshake_done`] lifts the budget
//! and turns reading ahead on. The buffer is taken only once a read fills what the caller asked
//! for (a stream worth reading ahead), so idle connections cost nothing; it is released at end of
//! stream.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much is read from the socket at once.
pub const READ_AHEAD: usize = 64 * 1024;

/// Largest single read during the handshake: what rustls asks for at once.
const HANDSHAKE_READ: usize = 4096;

pub struct ReadAhead<S> {
    inner: S,
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// Bytes the peer may still send before the handshake is done; `None` once it is.
    handshake_budget: Option<usize>,
    /// Set when the budget ran out before the handshake was done.
    exhausted: Arc<AtomicBool>,
}

impl<S> ReadAhead<S> {
    /// Wraps a socket whose TLS handshake has not happened yet: reads go straight through, at
    /// most `handshake_budget` bytes of them, until [`ReadAhead::handshake_done`].
    pub fn handshaking(inner: S, handshake_budget: usize) -> Self {
        ReadAhead {
            inner,
            buf: None,
            start: 0,
            end: 0,
            handshake_budget: Some(handshake_budget),
            exhausted: Arc::default(),
        }
    }

    /// A flag that tells, after the handshake future is gone, whether the budget ran out.
    pub fn budget_exhausted(&self) -> Arc<AtomicBool> {
        self.exhausted.clone()
    }

    /// The socket underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The peer is authenticated: no budget from now on, and read ahead.
    pub fn handshake_done(&mut self) {
        self.handshake_budget = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(left) = this.handshake_budget {
            if left == 0 {
                // Read no more from a stranger. No waker is registered: the handshake either
                // completes from what rustls holds, or its timeout ends the connection.
                this.exhausted.store(true, Ordering::Relaxed);
                return Poll::Pending;
            }
            // Straight through (a small copy: handshakes are a few kilobytes).
            let mut chunk = [0u8; HANDSHAKE_READ];
            let want = out.remaining().min(left).min(HANDSHAKE_READ);
            let mut read = ReadBuf::new(&mut chunk[..want]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            out.put_slice(read.filled());
            this.handshake_budget = Some(left - read.filled().len());
            return Poll::Ready(Ok(()));
        }
        if this.start == this.end {
            // A caller that asks for as much as we would read ahead gains nothing from a copy.
            if out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            // No buffer yet: read straight into the caller's, and take a buffer only once a
            // read fills it (more is waiting: a stream worth reading ahead). An idle or
            // request-sized connection never holds one.
            if this.buf.is_none() {
                let wanted = out.remaining();
                let before = out.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                if out.filled().len() - before == wanted {
                    this.buf = Some(vec![0; READ_AHEAD].into_boxed_slice());
                }
                return Poll::Ready(Ok(()));
            }
            let buf = this
                .buf
                .get_or_insert_with(|| vec![0; READ_AHEAD].into_boxed_slice());
            let mut read = ReadBuf::new(buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                this.buf = None;
                return Poll::Ready(Ok(()));
            }
            this.start = 0;
            this.end = n;
        }
        let buf = this
            .buf
            .as_ref()
            .expect("buffered bytes live in the buffer");
        let n = (this.end - this.start).min(out.remaining());
        out.put_slice(&buf[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_see_every_byte_in_order() {
        let (mut writer, reader) = duplex(256 * 1024);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let sent = data.clone();
        tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
        });
        let mut reader = ReadAhead::handshaking(reader, 10);
        reader.handshake_done();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, data);
        assert!(reader.buf.is_none(), "released at end of stream");
    }

    #[tokio::test]
    async fn nothing_is_allocated_before_the_first_read() {
        let (_writer, reader) = duplex(64);
        let reader = ReadAhead::handshaking(reader, 10);
        assert!(reader.buf.is_none());
    }

    #[tokio::test]
    async fn before_the_handshake_reads_go_straight_through_within_the_budget() {
        let (mut writer, reader) = duplex(64 * 1024);
        writer.write_all(&[7u8; 10_000]).await.unwrap();
        let mut reader = ReadAhead::handshaking(reader, 9_000);
        let exhausted = reader.budget_exhausted();
        let mut chunk = [0u8; 4096];
        let mut got = 0;
        while let Ok(read) =
            tokio::time::timeout(Duration::from_millis(200), reader.read(&mut chunk)).await
        {
            got += read.unwrap();
            assert!(
                reader.buf.is_none(),
                "no read-ahead buffer before the handshake"
            );
        }
        assert_eq!(got, 9_000, "reads stop at the budget");
        assert!(exhausted.load(Ordering::Relaxed));
        reader.handshake_done();
        assert_eq!(
            reader.read(&mut chunk).await.unwrap(),
            1_000,
            "and go on after it"
        );
    }

    #[tokio::test]
    async fn a_peer_that_ends_within_its_budget_is_seen_to_end() {
        let (mut writer, reader) = duplex(64 * 1024);
        writer.write_all(&[1u8; 5_000]).await.unwrap();
        drop(writer);
        let mut reader = ReadAhead::handshaking(reader, 6_000);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 5_000);
        assert!(!reader.budget_exhausted().load(Ordering::Relaxed));
    }
}
