//! Just enough HTTP/1.1 for the demo's pretend workloads: an app that answers every request on a
//! keep-alive connection, and a client that sends a request and reads one response.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Serves `body` to every request on 127.0.0.1:0, in the background; returns the address.
pub async fn spawn_app(body: &'static str) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(accept_forever(listener, body));
    Ok(addr)
}

async fn accept_forever(listener: TcpListener, body: &'static str) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve(stream, body));
    }
}

/// `demo --toy-app`: the app of the demo's payments pod, until it is killed.
pub fn serve_forever(listen: SocketAddr, body: &'static str) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen).await?;
        accept_forever(listener, body).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `demo --toy-get`: one GET within 3 seconds; prints the status line and body and exits 0 on a
/// 200, else says on stderr what happened and exits 1.
pub fn get_once(
    target: SocketAddr,
    path: &str,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(3), async {
            Client::connect(target).await?.get(path).await
        })
        .await
    });
    match answer {
        Ok(Ok((status, body))) => {
            writeln!(out, "{status}\n{}", body.trim_end())?;
            Ok(if status.contains(" 200 ") {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Ok(Err(error)) => {
            eprintln!("no answer from {target}: {error}");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            eprintln!("no answer from {target} within 3 s");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn serve(stream: TcpStream, body: &'static str) -> io::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        // Read one request head; the demo's requests have no body.
        let mut line = String::new();
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        );
        stream.get_mut().write_all(response.as_bytes()).await?;
    }
}

/// A client connection that can send several requests (keep-alive).
pub struct Client {
    stream: BufReader<TcpStream>,
    /// The Host header: the address connected to (admin servers accept only loopback hosts).
    host: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> io::Result<Client> {
        Ok(Client {
            stream: BufReader::new(TcpStream::connect(addr).await?),
            host: addr.to_string(),
        })
    }

    /// Sends `GET path` and returns the status line and body of the response.
    pub async fn get(&mut self, path: &str) -> io::Result<(String, String)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut status = String::new();
        if self.stream.read_line(&mut status).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the connection was closed without a response",
            ));
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await?;
        Ok((
            status.trim_end().to_owned(),
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

/// GET a path on an admin server; returns the body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> io::Result<String> {
    Client::connect(admin)
        .await?
        .get(path)
        .await
        .map(|(_, body)| body)
}

/// The value of one sample in a Prometheus text exposition (the first whose line starts with
/// `series`), or 0.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}
