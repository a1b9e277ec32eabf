//! The whole reachability table for one protocol and port: every pod in the pod network to every
//! other, each cell by [`decide`](crate::decide) — the truth table conformance suites print
//! (`.` reachable, `X` not; `-` when the two pods have no address of the family in common).

use std::fmt;

use palisade_policy::addrs::{family_of, Family};

use crate::explain::{decide, End};
use crate::model::{Cluster, Proto};

/// Rows are sources, columns destinations, both in the order of [`Matrix::pods`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    /// `namespace/name` of each pod, sorted.
    pub pods: Vec<String>,
    /// `cells[from][to]`: `None` when either pod has no address of the family.
    pub cells: Vec<Vec<Option<bool>>>,
    /// The protocol asked about.
    pub protocol: Proto,
    /// The port asked about.
    pub port: u16,
}

/// The table for `protocol`/`port` over addresses of `family`.
pub fn matrix(cluster: &Cluster, protocol: Proto, port: u16, family: Family) -> Matrix {
    let mut pods: Vec<usize> = (0..cluster.inventory.pods.len())
        .filter(|&i| cluster.inventory.pods[i].in_pod_network())
        .collect();
    pods.sort_by_key(|&i| cluster.inventory.pods[i].key());
    let address = |i: usize| {
        cluster.inventory.pods[i]
            .ips
            .iter()
            .copied()
            .find(|ip| family_of(*ip) == family)
    };
    let cells = pods
        .iter()
        .map(|&from| {
            pods.iter()
                .map(|&to| {
                    let (a, b) = (address(from)?, address(to)?);
                    let verdict = decide(
                        cluster,
                        &End {
                            ip: a,
                            pod: Some(from),
                        },
                        &End {
                            ip: b,
                            pod: Some(to),
                        },
                        protocol,
                        port,
                    );
                    Some(verdict.allowed)
                })
                .collect()
        })
        .collect();
    Matrix {
        pods: pods
            .iter()
            .map(|&i| cluster.inventory.pods[i].key())
            .collect(),
        cells,
        protocol,
        port,
    }
}

impl fmt::Display for Matrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = format!("{}/{}", self.protocol.name(), self.port);
        let width = self
            .pods
            .iter()
            .map(String::len)
            .chain([header.len()])
            .max()
            .unwrap_or(0);
        let mut line = format!("{header:width$}");
        for pod in &self.pods {
            line += &format!(" {pod:width$}");
        }
        writeln!(f, "{}", line.trim_end())?;
        for (pod, row) in self.pods.iter().zip(&self.cells) {
            let mut line = format!("{pod:width$}");
            for cell in row {
                let mark = match cell {
                    Some(true) => ".",
                    Some(false) => "X",
                    None => "-",
                };
                line += &format!(" {mark:width$}");
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}
