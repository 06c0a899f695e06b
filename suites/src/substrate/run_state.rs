//! `weft stat --run`'s state file: while a variant is deployed, the run's
//! work dir holds `proxies.json` (format: mesh-stat's `state` module) listing
//! its Weft proxies' admin listeners; emptied when the cell ends.

use std::path::{Path, PathBuf};

use mesh_stat::state::{Proxy, RunState, SCHEMA};

use super::Deployment;

/// Writes `<work>/proxies.json` for `dep` now and empties it when dropped
/// (after the cell's teardown). A write that fails is only logged: the
/// file is a convenience for `weft stat`, never a reason to fail a cell.
pub struct Published {
    work: PathBuf,
    substrate: &'static str,
}

impl Published {
    pub fn new(work: &Path, substrate: &'static str, dep: &Deployment) -> Published {
        let proxies = dep
            .admins
            .iter()
            .map(|a| Proxy {
                name: a.component.clone(),
                role: if a.outbound { "client" } else { "server" }.to_owned(),
                admin: format!("http://{}", a.addr),
                netns: a.netns.clone(),
            })
            .collect();
        write(work, substrate, dep.variant.as_str(), proxies);
        Published { work: work.to_path_buf(), substrate }
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        write(&self.work, self.substrate, "", Vec::new());
    }
}

fn write(work: &Path, substrate: &str, variant: &str, proxies: Vec<Proxy>) {
    let state = RunState { schema: SCHEMA, substrate: substrate.to_owned(), variant: variant.to_owned(), proxies };
    if let Err(e) = state.write(work) {
        tracing::warn!("writing {}: {e}", work.join(mesh_stat::state::FILE).display());
    }
}
