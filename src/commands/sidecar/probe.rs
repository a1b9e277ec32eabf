//! `palisade sidecar probe`: the sidecar's readiness as an exit code, for exec probes.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The sidecar's admin address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
    pub admin: std::net::SocketAddr,
}

/// GET /ready with a 2-second budget; 200 is ready.
pub fn probe(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    let limit = std::time::Duration::from_secs(2);
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&args.admin, limit)?;
        stream.set_read_timeout(Some(limit))?;
        stream.set_write_timeout(Some(limit))?;
        write!(
            stream,
            "GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        stream.take(4096).read_to_string(&mut text)?;
        Ok(text)
    })();
    match answer {
        Ok(text) if text.starts_with("HTTP/1.1 200") => Ok(ExitCode::SUCCESS),
        Ok(text) => {
            eprintln!("not ready: {}", text.lines().last().unwrap_or(""));
            Ok(crate::exit::answer(false))
        }
        Err(error) => {
            eprintln!("cannot reach the admin server at {}: {error}", args.admin);
            Ok(crate::exit::answer(false))
        }
    }
}
