//! A socket wrapper that reads ahead in large chunks. rustls asks its transport for at most
//! 4 KiB at a time, so a 16 KiB TLS record costs four `read` system calls; reading ahead 64 KiB
//! at once turns those into one call and a few copies from memory. Writes pass straight through
//! (vectored, so rustls can send several records in one call).
//!
//! The buffer is allocated on the first read, so connections that never receive anything cost
//! nothing, and released at end of stream.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much is read from the socket at once.
pub const READ_AHEAD: usize = 64 * 1024;

pub struct ReadAhead<S> {
    inner: S,
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: None,
            start: 0,
            end: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            // A caller that asks for as much as we would read ahead gains nothing from a copy.
            if out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, out);
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
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_see_every_byte_in_order() {
        let (mut writer, reader) = duplex(256 * 1024);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let sent = data.clone();
        tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
        });
        let mut reader = ReadAhead::new(reader);
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
        let reader = ReadAhead::new(reader);
        assert!(reader.buf.is_none());
    }
}
