//! What the sidecar tells its admin server (the HTTP is `palisade_admin`): ready only while a
//! valid, unexpired certificate is loaded and shutdown has not begun; POST /shutdown starts the
//! same drain as SIGTERM.

use std::sync::Arc;

use palisade_admin::AdminService;
use tokio_util::sync::CancellationToken;

use crate::identity::{holds_valid_certificate, TlsStore};
use crate::metrics::Metrics;

pub(crate) struct AdminState {
    pub metrics: Arc<Metrics>,
    pub store: TlsStore,
    /// Cancelled when shutdown begins, by a signal or by POST /shutdown.
    pub shutdown: CancellationToken,
}

impl AdminService for AdminState {
    fn ready(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            Err("shutting down".into())
        } else if holds_valid_certificate(&self.store) {
            Ok(())
        } else {
            Err("no valid certificate loaded".into())
        }
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn shutdown(&self) -> Option<()> {
        self.shutdown.cancel();
        Some(())
    }
}
