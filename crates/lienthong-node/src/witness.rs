//! The registry as the witness of this node's log checkpoints, over its management API.

use lienthong_globalconf::{Anchor, VerifiedConf};
use lienthong_msglog::LogError;
use lienthong_msglog::witness::{Witness, WitnessFuture, WitnessedFuture};
use lienthong_proto::registry::v1 as pb;
use lienthong_proto::registry::v1::management_service_client::ManagementServiceClient;
use std::sync::Arc;
use tokio::sync::{Mutex, watch};
use tonic::transport::Channel;

/// Connects to the registry named in the current global configuration on first use, and keeps
/// the channel (tonic reconnects it when it breaks).
#[derive(Debug)]
pub struct RegistryWitness {
    conf: watch::Receiver<Option<Arc<VerifiedConf>>>,
    anchor: Anchor,
    client: Mutex<Option<ManagementServiceClient<Channel>>>,
}

impl RegistryWitness {
    pub fn new(conf: watch::Receiver<Option<Arc<VerifiedConf>>>, anchor: Anchor) -> Self {
        Self { conf, anchor, client: Mutex::new(None) }
    }

    async fn client(&self) -> Result<ManagementServiceClient<Channel>, LogError> {
        let mut held = self.client.lock().await;
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let conf = self
            .conf
            .borrow()
            .clone()
            .ok_or_else(|| LogError::Checkpoint("no global configuration yet".into()))?;
        let mut last = String::from("the configuration names no registry");
        for url in &conf.conf.registry_urls {
            match crate::home::connect(url, &conf.conf.approved_cas, &self.anchor).await {
                Ok(channel) => {
                    let c = ManagementServiceClient::new(channel);
                    *held = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(LogError::Checkpoint(last))
    }
}

impl Witness for RegistryWitness {
    fn witness(&self, request: pb::WitnessRequest) -> WitnessFuture<'_> {
        Box::pin(async move {
            let mut client = self.client().await?;
            match client.witness_checkpoint(request).await {
                Ok(r) => r
                    .into_inner()
                    .checkpoint
                    .ok_or_else(|| LogError::Checkpoint("the registry answered nothing".into())),
                Err(status) => {
                    Err(LogError::Checkpoint(format!("the registry refused: {}", status.message())))
                }
            }
        })
    }

    fn witnessed(&self, origin: &str) -> WitnessedFuture<'_> {
        let node = origin.parse::<lienthong_types::NodeId>();
        Box::pin(async move {
            let node = node.map_err(|e| LogError::Checkpoint(e.to_string()))?;
            let mut client = self.client().await?;
            let request = pb::GetWitnessedRequest { node: Some((&node).into()) };
            match client.get_witnessed(request).await {
                Ok(r) => Ok(r.into_inner().checkpoint),
                Err(status) => Err(LogError::Checkpoint(format!(
                    "the registry did not give the witnessed checkpoint: {}",
                    status.message()
                ))),
            }
        })
    }
}
