//! Federation: a node trusts the configurations of the partner instances its own configuration
//! lists (their instance, signing keys and download URLs, added by this instance's registry
//! operator), downloads each partner's federation view (`GET .../globalconf/federation`, without
//! the partner's grants) with a [`ConfClient`] of its own, and runs on one merged view: its own
//! configuration with the partners' members, nodes, services and CAs added.
//!
//! Trust stays rooted in the node's anchor: a partner's configuration is used only if it
//! verified against the keys this instance's signed configuration announces for that partner.
//! Grants stay the provider instance's own: the merged view carries only this instance's grants,
//! which may name partner clients.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lienthong_confclient::{Clock, ConfClient, ConfClientConfig};
use lienthong_globalconf::{Anchor, FederationPartner, Freshness, GlobalConf, VerifiedConf};
use lienthong_types::InstanceId;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Appended to a partner's configuration URL: its registry serves the federation view there.
pub const FEDERATION_SUFFIX: &str = "/federation";
/// Partner configurations also expire on their own: the merged view is recomputed this often.
const RECHECK: Duration = Duration::from_secs(15);

type ConfRx = watch::Receiver<Option<Arc<VerifiedConf>>>;

/// One partner followed: its client and what it was started with.
struct Partner {
    entry: FederationPartner,
    client: ConfClient,
    rx: ConfRx,
    forward: JoinHandle<()>,
}

/// The running federation task; [`Federation::shutdown`] stops it and every partner client.
#[derive(Debug)]
pub struct Federation {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Federation {
    /// Follows `own` and its partners; the merged view is published on the returned receiver
    /// (the same as `own`'s value while there is no partner). Partner state lives under
    /// `state_dir/INSTANCE`.
    pub fn start(own: ConfRx, state_dir: PathBuf, clock: Clock, poll: Option<Duration>) -> (Self, ConfRx) {
        let (merged_tx, merged_rx) = watch::channel(own.borrow().clone());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(own, merged_tx, state_dir, clock, poll, stopped));
        (Self { stop, task }, merged_rx)
    }

    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

async fn run(
    mut own: ConfRx,
    merged: watch::Sender<Option<Arc<VerifiedConf>>>,
    state_dir: PathBuf,
    clock: Clock,
    poll: Option<Duration>,
    mut stopped: watch::Receiver<bool>,
) {
    let changed = Arc::new(Notify::new());
    let mut partners: BTreeMap<InstanceId, Partner> = BTreeMap::new();
    // What the published view was built from: republished only when that changes.
    let mut built_from: Vec<Arc<VerifiedConf>> = Vec::new();
    loop {
        let current = own.borrow_and_update().clone();
        let mut inputs = Vec::new();
        if let Some(c) = &current {
            follow(&mut partners, &c.conf, &state_dir, &clock, poll, &changed).await;
            let now = clock.now();
            inputs.push(c.clone());
            inputs.extend(
                partners
                    .values()
                    .filter_map(|p| p.rx.borrow().clone())
                    .filter(|p| Freshness::of(&p.conf, now, Duration::ZERO).is_usable()),
            );
        }
        let same = inputs.len() == built_from.len()
            && inputs.iter().zip(&built_from).all(|(a, b)| Arc::ptr_eq(a, b));
        if !same {
            let view = match inputs.split_first() {
                None => None,
                Some((own, [])) => Some(own.clone()),
                Some((own, theirs)) => Some(Arc::new(merge(own, theirs))),
            };
            merged.send_replace(view);
            built_from = inputs;
        }
        tokio::select! {
            r = own.changed() => if r.is_err() { break },
            () = changed.notified() => {}
            () = tokio::time::sleep(RECHECK) => {}
            _ = stopped.changed() => break,
        }
    }
    for (_, p) in std::mem::take(&mut partners) {
        p.forward.abort();
        p.client.shutdown().await;
    }
}

/// Starts a client for each partner `conf` lists (again when its keys or URLs changed) and
/// stops those it no longer lists.
async fn follow(
    partners: &mut BTreeMap<InstanceId, Partner>,
    conf: &GlobalConf,
    state_dir: &std::path::Path,
    clock: &Clock,
    poll: Option<Duration>,
    changed: &Arc<Notify>,
) {
    let wanted: BTreeMap<InstanceId, &FederationPartner> = conf
        .federation_partners
        .iter()
        .filter(|p| p.instance != conf.instance)
        .map(|p| (p.instance.clone(), p))
        .collect();
    let stale: Vec<InstanceId> = partners
        .iter()
        .filter(|(i, p)| wanted.get(*i).is_none_or(|w| **w != p.entry))
        .map(|(i, _)| i.clone())
        .collect();
    for instance in stale {
        if let Some(p) = partners.remove(&instance) {
            info!(%instance, "no longer following the partner instance's configuration (as it was)");
            p.forward.abort();
            p.client.shutdown().await;
        }
    }
    for (instance, entry) in wanted {
        if partners.contains_key(&instance) {
            continue;
        }
        let anchor = Anchor {
            instance: instance.clone(),
            conf_urls: entry
                .conf_urls
                .iter()
                .map(|u| format!("{}{FEDERATION_SUFFIX}", u.trim_end_matches('/')))
                .collect(),
            signing_keys: entry.signing_keys.clone(),
            generated_at: conf.generated_at,
        };
        let mut config = ConfClientConfig::new(anchor, state_dir.join(instance.as_str()));
        config.clock = clock.clone();
        if let Some(p) = poll {
            config.poll_interval = p;
        }
        match ConfClient::start(config) {
            Ok(client) => {
                let rx = client.subscribe();
                let mut watched = rx.clone();
                let notify = changed.clone();
                let forward = tokio::spawn(async move {
                    while watched.changed().await.is_ok() {
                        notify.notify_one();
                    }
                });
                info!(%instance, "following the partner instance's configuration");
                partners.insert(instance, Partner { entry: entry.clone(), client, rx, forward });
            }
            Err(e) => warn!(%instance, error = %e, "cannot follow the partner instance's configuration"),
        }
    }
}

/// `own` with the partners' members, nodes, services and CAs added
/// ([`GlobalConf::add_partner`]); the partners' views ride along for evidence bundles.
fn merge(own: &VerifiedConf, partners: &[Arc<VerifiedConf>]) -> VerifiedConf {
    let mut conf = own.conf.clone();
    for p in partners {
        conf.add_partner(&p.conf);
    }
    VerifiedConf {
        conf,
        bytes: own.bytes.clone(),
        signed_by: own.signed_by.clone(),
        partners: partners.to_vec(),
    }
}
