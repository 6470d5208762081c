//! `lienthong demo --pki`: the instance PKI alone, step by step, with nothing to configure: the
//! foundation the registry and nodes stand on. A CA issues node and member certificates from
//! requests, a member signs a message that a provider verifies, and two nodes talk over mutual
//! TLS pinned to their registered fingerprints, while an unregistered node is refused.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use lienthong_pki::tls::{self, TlsIdentity, TrustPolicy};
use lienthong_pki::{
    Certificate, CertificateAuthority, Csr, Fingerprint, KeyAlgorithm, PrivateKey, Validity,
};
use lienthong_types::{InstanceId, MemberId, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Console;

const CONSUMER: &str = "VN/GOV/000.00.00.G22/ss1";
const PROVIDER: &str = "VN/GOV/000.00.00.G01/ss1";
const CLIENT_MEMBER: &str = "VN/GOV/000.00.00.G22";

pub(crate) fn run(keep: Option<&Path>, console: &dyn Console) -> Result<()> {
    let temp;
    let dir = match keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path()
        }
    };
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(demo(dir, console))?;
    match keep {
        Some(d) => console.out(&format!(
            "\ncertificates are in {}; inspect one with `lienthong pki show FILE`",
            d.display()
        )),
        None => {
            console.out("\n(certificates were made in a temporary directory; pass --dir DIR to keep them)")
        }
    }
    console.out(&format!("\ndemo finished in {} ms", started.elapsed().as_millis()));
    Ok(())
}

fn step(console: &dyn Console, n: u32, what: &str) {
    console.out(&format!("\n[{n}] {what}"));
}

async fn demo(dir: &Path, console: &dyn Console) -> Result<()> {
    let now = SystemTime::now();
    let consumer: NodeId = CONSUMER.parse()?;
    let provider: NodeId = PROVIDER.parse()?;
    let member: MemberId = CLIENT_MEMBER.parse()?;

    step(console, 1, "Instance CA for VN (Ed25519)");
    let ca_key = PrivateKey::generate(KeyAlgorithm::Ed25519)?;
    let ca = CertificateAuthority::init(InstanceId::new("VN")?, &ca_key, Validity::days(3650), now)?;
    save(dir, "ca.crt.pem", ca.certificate())?;

    step(console, 2, "Node authentication certificates, issued from CSRs");
    let consumer_tls = node_identity(&ca, &consumer, KeyAlgorithm::Ed25519, dir, "consumer", console)?;
    let provider_tls = node_identity(&ca, &provider, KeyAlgorithm::EcdsaP256, dir, "provider", console)?;

    step(console, 3, "Member signing certificate (RSA-PSS 3072), and a signed request");
    let member_key = PrivateKey::generate(KeyAlgorithm::RsaPss)?;
    let member_cert =
        ca.issue_member(&Csr::for_member(&member_key, &member)?, &member, Validity::days(365), now)?;
    save(dir, "member-signing.crt.pem", &member_cert)?;
    let message = b"GET /r1/VN/GOV/000.00.00.G01/csdlqg/citizen/079203001234";
    let signature = member_key.sign(message)?;
    let public = member_cert.info()?.public_key;
    public.verify(message, &signature).map_err(|e| anyhow!("signature check failed: {e}"))?;
    console.out(&format!(
        "    signed {} bytes as {member}: signature verifies with the certificate",
        message.len()
    ));
    let mut forged = message.to_vec();
    *forged.last_mut().expect("non-empty") ^= 1;
    if public.verify(&forged, &signature).is_ok() {
        bail!("an altered message verified");
    }
    console.out("    the same signature over an altered message: refused");

    step(console, 4, "Mutual TLS between the two registered nodes, pinned by fingerprint");
    let registered = [(consumer.clone(), fp(&consumer_tls)), (provider.clone(), fp(&provider_tls))];
    let policy = Arc::new(TrustPolicy::new([ca.certificate()], registered)?);
    let ok = exchange(&provider_tls, &consumer_tls, &policy, &provider).await?;
    console.out(&format!("    {ok}"));

    step(console, 5, "A node with a valid certificate from the same CA, but not the registered one");
    let rogue = node_identity(&ca, &consumer, KeyAlgorithm::Ed25519, dir, "rogue", console)?;
    match exchange(&provider_tls, &rogue, &policy, &provider).await {
        Ok(_) => bail!("the provider accepted an unregistered certificate"),
        Err(e) => console.out(&format!("    refused: {e}")),
    }
    Ok(())
}

fn fp(id: &TlsIdentity) -> Fingerprint {
    id.chain[0].fingerprint()
}

fn node_identity(
    ca: &CertificateAuthority,
    node: &NodeId,
    alg: KeyAlgorithm,
    dir: &Path,
    name: &str,
    console: &dyn Console,
) -> Result<TlsIdentity> {
    let key = PrivateKey::generate(alg)?;
    let csr = Csr::for_node(&key, node)?;
    let cert = ca.issue_node(&csr, node, Validity::days(365), SystemTime::now())?;
    console.out(&format!("    {name:<9} {node}  {alg:<11} sha256 {}", cert.fingerprint()));
    save(dir, &format!("{name}.crt.pem"), &cert)?;
    Ok(TlsIdentity { chain: vec![cert], key: Arc::new(key) })
}

fn save(dir: &Path, name: &str, cert: &Certificate) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, cert.to_pem()).with_context(|| format!("writing {}", path.display()))
}

/// One request/response over a fresh mTLS connection on loopback. On refusal, the error names
/// the reason the provider's verifier gave.
async fn exchange(
    server: &TlsIdentity,
    client: &TlsIdentity,
    policy: &Arc<TrustPolicy>,
    expected: &NodeId,
) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(server, policy.clone())?));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls::client_config(
        client,
        policy.clone(),
        expected.clone(),
    )?));
    let serve = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut stream = acceptor.accept(tcp).await?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await?;
        stream.write_all(b"pong").await?;
        stream.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let call = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut stream = connector.connect(tls::peer_server_name(), tcp).await?;
        stream.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await?;
        let version = stream.get_ref().1.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
        Ok::<_, std::io::Error>(version)
    };
    let limit = Duration::from_secs(10);
    let called = tokio::time::timeout(limit, call).await.context("client timed out")?;
    let served = tokio::time::timeout(limit, serve).await.context("server timed out")??;
    if let Err(e) = served {
        return Err(anyhow!(describe(&e)));
    }
    let version = called.map_err(|e| anyhow!(describe(&e)))?;
    Ok(format!("{expected} answered over {version}, client certificate verified by the provider"))
}

fn describe(e: &std::io::Error) -> String {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(tls::peer_rejection)
        .map(|r| r.to_string())
        .unwrap_or_else(|| e.to_string())
}
