//! `palisade inject serve`: the mutating admission webhook (palisade_webhook), until SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use palisade_webhook::{Webhook, WebhookConfig};

use super::SettingsArgs;
use crate::commands::service::{available_parallelism, shutdown_signal};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
palisade inject serve --cert tls/cert.pem --key tls/key.pem\n  \
palisade inject serve --listen 0.0.0.0:9443 --cert tls/cert.pem \\\n      \
--key tls/key.pem --metrics 0.0.0.0:15020 --image palisade:0.1.0\n\n\
The API server sends each pod it is about to make (POST /inject, as the\n\
MutatingWebhookConfiguration of `palisade install` says); the answer is the JSON\n\
Patch of what `palisade inject` would do to it, or a refusal with inject's sentence.")]
pub struct ServeArgs {
    /// The HTTPS address the API server calls.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,
    /// PEM: the serving certificate and its chain (read again when the file changes).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// PEM: its private key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// A read-only listener for scrapers and the kubelet: /live, /ready, /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

pub fn run(args: &ServeArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let config = WebhookConfig {
        listen: args.listen,
        cert: args.cert.clone(),
        key: args.key.clone(),
        metrics_listen: args.metrics,
        settings: args.settings.settings(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(available_parallelism().min(4))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Fatal errors are said once, by main, in the service's log.
        let webhook = Webhook::bind(config)
            .await
            .context("cannot start the webhook")?;
        let (api, metrics) = webhook.addresses();
        writeln!(
            out,
            "{}",
            serde_json::json!({"listening": {"api": api.to_string(),
                "metrics": metrics.map(|m| m.to_string())}})
        )?;
        out.flush()?;
        tracing::info!(%api, "admission webhook listening");
        webhook.run(shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
