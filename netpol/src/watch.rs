//! Manifests watched for change: files or directories (a ConfigMap mount, a directory a
//! controller writes), looked at on every poll and loaded again only when the bytes of some file
//! changed. `policy sync` and the sidecar's `network_policy` admission both use it.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use crate::{Cluster, LoadErrors, Loaded, MAX_FILE_BYTES};

/// Watches the manifests' paths.
pub struct Watched {
    paths: Vec<PathBuf>,
    /// A hash of every file's name and bytes at the last load.
    last: Option<u64>,
}

impl Watched {
    /// Watches `paths` (files or directories); nothing is read until [`Watched::look`].
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Watched { paths, last: None }
    }

    /// `None` when nothing changed since the last load; else the new load's result.
    pub fn look(&mut self) -> Option<Result<Cluster, LoadErrors>> {
        self.changed().then(|| crate::load_paths(&self.paths))
    }

    /// As [`Watched::look`], but loaded with [`crate::load_partial`]: a refused NetworkPolicy
    /// does not hold up the rest.
    pub fn look_partial(&mut self) -> Option<Result<Loaded, LoadErrors>> {
        self.changed().then(|| crate::load_partial(&self.paths))
    }

    /// Whether the files changed since the last look (remembering what they are now).
    fn changed(&mut self) -> bool {
        let fingerprint = self.fingerprint();
        if self.last == Some(fingerprint) {
            return false;
        }
        self.last = Some(fingerprint);
        true
    }

    /// Names and bytes of the files a load would read (unreadable ones by their error), hashed.
    fn fingerprint(&self) -> u64 {
        let mut hash = std::collections::hash_map::DefaultHasher::new();
        for path in &self.paths {
            let mut files = vec![path.clone()];
            if path.is_dir() {
                files = std::fs::read_dir(path)
                    .map(|entries| {
                        let mut v: Vec<PathBuf> =
                            entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                        v.sort();
                        v
                    })
                    .unwrap_or_default();
            }
            for file in files {
                file.hash(&mut hash);
                let bytes = std::fs::metadata(&file)
                    .ok()
                    .filter(|m| m.is_file() && m.len() <= MAX_FILE_BYTES)
                    .and_then(|_| std::fs::read(&file).ok());
                bytes.hash(&mut hash);
            }
        }
        hash.finish()
    }
}
