//! What the sidecar tells its admin server (the HTTP is `palisade_admin`): ready only while a
//! valid, unexpired certificate is loaded, every policy file it admits by has loaded once, and
//! shutdown has not begun; POST /shutdown starts the
//! same drain as SIGTERM. On the read-only listener it also runs the app's probes for the
//! kubelet (`app_probe.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use palisade_admin::AdminService;
use tokio_util::sync::CancellationToken;

use crate::admission::PolicyFiles;
use crate::app_probe::AppProbe;
use crate::identity::ListenerTls;
use crate::metrics::Metrics;

pub(crate) struct AdminState {
    pub metrics: Arc<Metrics>,
    pub tls: Arc<ListenerTls>,
    pub policies: Arc<PolicyFiles>,
    /// Cancelled when shutdown begins, by a signal or by POST /shutdown.
    pub shutdown: CancellationToken,
    /// The app's probes, by path (`app_probes`).
    pub app_probes: Arc<BTreeMap<String, AppProbe>>,
}

impl AdminService for AdminState {
    fn ready(&self) -> Result<(), palisade_admin::NotReady> {
        if self.shutdown.is_cancelled() {
            Err("shutting down".into())
        } else if !self.tls.holds_valid_certificate() {
            Err("no valid certificate loaded".into())
        } else if let Some(file) = self.policies.not_loaded() {
            Err(format!("no policy loaded from {} yet", file.display()).into())
        } else {
            Ok(())
        }
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn shutdown(&self) -> Option<()> {
        self.shutdown.cancel();
        Some(())
    }

    fn app_probe(&self, path: &str, local: SocketAddr) -> Option<palisade_admin::AppProbeFuture> {
        let probe = self.app_probes.get(path)?.clone();
        let path = path.to_owned();
        Some(Box::pin(async move {
            // A dual-stack listener sees an IPv4 kubelet as ::ffff:a.b.c.d; the kubelet names a.b.c.d.
            let outcome = probe.run(local.ip().to_canonical()).await;
            if let Err(why) = &outcome {
                tracing::debug!(probe = %path, %why, "app probe failed");
            }
            outcome
        }))
    }
}
