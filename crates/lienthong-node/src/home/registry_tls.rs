//! TLS to the registry: the management API, pinned to this instance's registry.

use super::*;

/// The registry's URL and CA come from the verified configuration, so the anchor is all a node
/// needs out of band (decision 0004).
pub(super) async fn connect_registry(
    conf_client: &ConfClient,
    anchor: &Anchor,
    opts: &InitOptions,
) -> Result<(String, ManagementServiceClient<Channel>), HomeError> {
    let refreshed = conf_client.refresh_now().await;
    // A held copy that is still valid will do if the download failed.
    let conf = match (conf_client.current(), refreshed) {
        (Some(c), _) if c.conf.expires_at > opts.clock.now() => c,
        (_, Err(e)) => return Err(e.into()),
        (_, Ok(_)) => return Err(HomeError::Invalid("the held global configuration is expired".into())),
    };
    let url = match &opts.registry_url {
        Some(u) => u.clone(),
        None => conf.conf.registry_urls.first().cloned().ok_or(HomeError::NoRegistryUrl)?,
    };
    let channel = connect(&url, &conf.conf.approved_cas, anchor).await?;
    Ok((url, ManagementServiceClient::new(channel)))
}

/// A channel to the registry at `url` (`https://host:port`) that accepts only the anchor
/// instance's registry certificate from an approved CA (both from the verified configuration).
/// No client certificate: management requests are authenticated by their signatures. Bounded
/// in time; calls on the channel are too.
pub(crate) async fn connect(
    url: &str,
    approved_cas: &[Certificate],
    anchor: &Anchor,
) -> Result<Channel, HomeError> {
    let failed = |reason: String| HomeError::Connect { url: url.to_owned(), reason };
    let authority = url
        .strip_prefix("https://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| failed("the URL must look like https://host:port".into()))?
        .to_owned();
    let mut config = registry_client_config(None, approved_cas, &anchor.instance)
        .map_err(|e| failed(format!("TLS set-up: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    // tonic sees plain http; the connector does TLS.
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| failed(e.to_string()))?
        .timeout(CALL_TIMEOUT);
    let connecting = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let (connector, authority) = (connector.clone(), authority.clone());
        async move {
            let tcp = TcpStream::connect(authority.as_str()).await?;
            let tls = connector.connect(registry_server_name(), tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    }));
    match tokio::time::timeout(CALL_TIMEOUT, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(failed(error_chain(&e))),
        Err(_) => Err(failed("timed out".into())),
    }
}

/// tonic's transport errors say little at the top ("transport error"); the causes say why.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
