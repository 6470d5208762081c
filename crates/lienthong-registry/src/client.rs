//! Clients of the registry's gRPC API over TLS, used by the CLI and by tests alike: the server
//! must prove it is this instance's registry (certificate from the instance CA).

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use lienthong_pki::Certificate;
use lienthong_pki::tls::{TlsIdentity, registry_client_config, registry_server_name};
use lienthong_proto::registry::v1::admin_service_client::AdminServiceClient;
use lienthong_proto::registry::v1::management_service_client::ManagementServiceClient;
use lienthong_types::InstanceId;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// The registry could not be reached or refused the connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("registry URL {0:?} must look like https://host:port")]
    BadUrl(String),
    #[error("TLS set-up: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot connect to the registry at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Opens a channel to `url` (`https://host:port`), trusting only `instance`'s registry
/// certificate from `approved_cas`, presenting `own` if given.
pub async fn connect(
    url: &str,
    own: Option<&TlsIdentity>,
    approved_cas: &[Certificate],
    instance: &InstanceId,
) -> Result<Channel, ClientError> {
    let authority = url
        .strip_prefix("https://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| ClientError::BadUrl(url.into()))?
        .to_owned();
    let mut config = registry_client_config(own, approved_cas, instance)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    // tonic only sees plain http; TLS is done by the connector below.
    let endpoint =
        Endpoint::from_shared(format!("http://{authority}")).map_err(|_| ClientError::BadUrl(url.into()))?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (connector, authority) = (connector.clone(), authority.clone());
            async move {
                let tcp = TcpStream::connect(authority.as_str()).await?;
                let tls = connector.connect(registry_server_name(), tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|source| ClientError::Connect { url: url.into(), source })?;
    Ok(channel)
}

/// The administrator's client.
pub async fn admin_client(
    url: &str,
    admin: &TlsIdentity,
    approved_cas: &[Certificate],
    instance: &InstanceId,
) -> Result<AdminServiceClient<Channel>, ClientError> {
    Ok(AdminServiceClient::new(connect(url, Some(admin), approved_cas, instance).await?))
}

/// A node's or member's client for management requests (signed, so no client certificate is
/// needed).
pub async fn management_client(
    url: &str,
    own: Option<&TlsIdentity>,
    approved_cas: &[Certificate],
    instance: &InstanceId,
) -> Result<ManagementServiceClient<Channel>, ClientError> {
    Ok(ManagementServiceClient::new(connect(url, own, approved_cas, instance).await?))
}
