//! The tests' one HTTP client, and the tiny apps the sidecars forward to.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// The tests' one HTTP client: one HTTP/1.1 request with `Connection: close` over a new
/// connection; (status, body). The body is read as `Content-Length` says (so servers that keep the
/// connection open work), or to the end of the stream without one. Bounded: 5 s to connect, 10 s
/// per read, 1 MiB of response.
pub fn try_http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).into_owned();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let length: Option<usize> = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())
                    .flatten()
            });
            if let Some(length) = length {
                if response.len() >= end + 4 + length {
                    let body = &response[end + 4..end + 4 + length];
                    return Ok((status, String::from_utf8_lossy(body).into_owned()));
                }
            }
        }
        if response.len() > 1024 * 1024 {
            return Err("response too long".into());
        }
        match s.read(&mut buf) {
            Ok(0) => {
                let text = String::from_utf8_lossy(&response).into_owned();
                return match text.split_once("\r\n\r\n") {
                    Some((head, body)) => Ok((
                        head.split_whitespace()
                            .nth(1)
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(0),
                        body.to_owned(),
                    )),
                    None => Err(format!("closed after {text:?}")),
                };
            }
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// [`try_http_request`], failing the test when no response comes.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    try_http_request(addr, method, path)
        .unwrap_or_else(|e| panic!("{method} {path} at {addr}: {e}"))
}

/// A TCP app on 127.0.0.1:0 that runs `serve` on each connection in its own thread. The listener
/// thread lives as long as the test process; tests are short.
pub fn spawn_app(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind app");
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Echoes every byte back, and closes its write side when the client closes its own.
pub fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Answers each HTTP request (read up to the blank line) with a fixed body; keeps the connection
/// open unless the request says `Connection: close`.
pub fn http_ok(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        let mut saw_request = false;
        let mut close = false;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => {
                    saw_request = true;
                    close |= line.trim().eq_ignore_ascii_case("connection: close");
                }
            }
        }
        if !saw_request {
            return;
        }
        let body = "hello from the app\n";
        if write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        )
        .is_err()
            || close
        {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Says hello first, before reading anything (like SMTP or MySQL), then echoes.
pub fn banner_then_echo(mut stream: TcpStream) {
    if stream.write_all(b"220 hello, speak after me\r\n").is_err() {
        return;
    }
    echo(stream);
}
