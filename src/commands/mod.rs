//! One module per top-level subcommand.

#[cfg(feature = "tools")]
pub mod ca;
#[cfg(feature = "tools")]
mod ca_serve;
#[cfg(feature = "tools")]
pub mod cert;
#[cfg(feature = "tools")]
mod cert_client;
#[cfg(feature = "tools")]
pub mod demo;
#[cfg(feature = "tools")]
pub mod inject;
#[cfg(feature = "tools")]
pub mod policy;
#[cfg(feature = "tools")]
mod redirect;
pub mod sidecar;

#[cfg(feature = "tools")]
use std::time::Duration;

#[cfg(feature = "tools")]
/// Parses `90s`, `15m`, `24h`, `30d`, `1y` (and combinations such as `1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("\"{s}\" is not a duration like 90s, 15m, 24h or 30d ({e})"))?;
    if d.is_zero() {
        return Err("a lifetime must be longer than zero".into());
    }
    Ok(d)
}

/// The key types a command accepts, as clap lists them in `--help` and in errors.
#[cfg(feature = "tools")]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyTypeArg {
    EcdsaP256,
    Ed25519,
}

#[cfg(feature = "tools")]
impl From<KeyTypeArg> for palisade_ca::KeyType {
    fn from(k: KeyTypeArg) -> Self {
        match k {
            KeyTypeArg::EcdsaP256 => palisade_ca::KeyType::EcdsaP256,
            KeyTypeArg::Ed25519 => palisade_ca::KeyType::Ed25519,
        }
    }
}
