//! The demo's topology: set up on the first run (or reopened from `--dir`), run, driven with
//! traffic, summarised, and (with `--exit`) stopped with every node's log verified.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lienthong_audit_service::{
    Auditors, CERT_FILE, Credentials, KEY_FILE, NodeSource, Standalone, StandaloneSetup,
};
use lienthong_globalconf::{Anchor, to_millis};
use lienthong_node::home::{InitOptions as NodeInitOptions, NodeHome};
use lienthong_node::manage::{ServiceSpec, publish_service};
use lienthong_node::{Listeners, NodeConfig, NodeHandle, StartOptions};
use lienthong_pki::is_client_tls::self_signed_client;
use lienthong_pki::{Certificate, KeyAlgorithm};
use lienthong_proto::convert::IntoDomain;
use lienthong_proto::globalconf::v1 as gc;
use lienthong_registry::admin::{AdminSession, GrantTo, NewGrant};
use lienthong_registry::{InitOptions, RegistryConfig, RegistryHome, RunningRegistry, system_clock};
use lienthong_types::{ClientId, MemberId, NodeId, ServiceId, SubsystemId};
use serde_json::{Value, json};

use crate::backends::{BIRTH_RECORDS, Backends, CITIZEN_IDS, TAX_CODES};
use crate::{Console, DemoOptions};

const VN: &str = "VN";
const NA: &str = "VN-NA";
const BCA: &str = "VN/GOV/000.00.00.G01";
const VPCP: &str = "VN/GOV/000.00.00.G02";
const BTC: &str = "VN/GOV/000.00.00.G09";
const UBND_NA: &str = "VN-NA/GOV/000.00.00.H40";
const DANCU: &str = "VN/GOV/000.00.00.G01/dancu";
const DKKD: &str = "VN/GOV/000.00.00.G09/dkkd";
const CONG_DVC: &str = "VN/GOV/000.00.00.G02/cong-dvc";
const SO_TU_PHAP: &str = "VN-NA/GOV/000.00.00.H40/so-tu-phap";
const SO_KHDT: &str = "VN-NA/GOV/000.00.00.H40/so-khdt";
const TRA_CUU_CONG_DAN: &str = "VN/GOV/000.00.00.G01/dancu/tra-cuu-cong-dan";
const TRA_CUU_DN: &str = "VN/GOV/000.00.00.G09/dkkd/tra-cuu-doanh-nghiep";
const KHAI_SINH: &str = "VN-NA/GOV/000.00.00.H40/so-tu-phap/khai-sinh";
const LEGAL_BASIS: &str = "Nghị định 47/2020/NĐ-CP về quản lý, kết nối và chia sẻ dữ liệu số";

/// One member: id, name, subsystems (code, name).
struct MemberSpec {
    id: &'static str,
    name: &'static str,
    subsystems: &'static [(&'static str, &'static str)],
}

/// One node: id, its key in the ports file, hosted subsystems, provided services (service,
/// backend index: population, business, civil status).
struct NodeSpec {
    id: &'static str,
    key: &'static str,
    instance: &'static str,
    subsystems: &'static [&'static str],
    services: &'static [(&'static str, usize, &'static str)],
}

const MEMBERS: &[(&str, MemberSpec)] = &[
    (
        VN,
        MemberSpec {
            id: BCA,
            name: "Bộ Công an",
            subsystems: &[("dancu", "Cơ sở dữ liệu quốc gia về dân cư")],
        },
    ),
    (
        VN,
        MemberSpec {
            id: BTC,
            name: "Bộ Tài chính",
            subsystems: &[("dkkd", "Hệ thống thông tin quốc gia về đăng ký doanh nghiệp")],
        },
    ),
    (
        VN,
        MemberSpec {
            id: VPCP,
            name: "Văn phòng Chính phủ",
            subsystems: &[("cong-dvc", "Cổng Dịch vụ công quốc gia")],
        },
    ),
    (
        NA,
        MemberSpec {
            id: UBND_NA,
            name: "Ủy ban nhân dân tỉnh Nghệ An",
            subsystems: &[("so-tu-phap", "Sở Tư pháp"), ("so-khdt", "Sở Kế hoạch và Đầu tư")],
        },
    ),
];

const NODES: &[NodeSpec] = &[
    NodeSpec {
        id: "VN/GOV/000.00.00.G01/ss-bca",
        key: "bca",
        instance: VN,
        subsystems: &[DANCU],
        services: &[(TRA_CUU_CONG_DAN, 0, "Tra cứu thông tin công dân theo số định danh")],
    },
    NodeSpec {
        id: "VN/GOV/000.00.00.G09/ss-btc",
        key: "btc",
        instance: VN,
        subsystems: &[DKKD],
        services: &[(TRA_CUU_DN, 1, "Tra cứu thông tin doanh nghiệp theo mã số thuế")],
    },
    NodeSpec {
        id: "VN/GOV/000.00.00.G02/ss-vpcp",
        key: "vpcp",
        instance: VN,
        subsystems: &[CONG_DVC],
        services: &[],
    },
    NodeSpec {
        id: "VN-NA/GOV/000.00.00.H40/lgsp-na",
        key: "lgsp-na",
        instance: NA,
        subsystems: &[SO_TU_PHAP, SO_KHDT],
        services: &[(KHAI_SINH, 2, "Tra cứu đăng ký khai sinh")],
    },
];

/// (service, client, granting instance). The last is never used; the denied call is SO_KHDT to
/// TRA_CUU_CONG_DAN, for which no grant exists.
const GRANTS: &[(&str, &str, &str)] = &[
    (TRA_CUU_CONG_DAN, CONG_DVC, VN),
    (TRA_CUU_DN, CONG_DVC, VN),
    (TRA_CUU_CONG_DAN, SO_TU_PHAP, VN),
    (TRA_CUU_DN, SO_KHDT, VN),
    (KHAI_SINH, CONG_DVC, NA),
];

/// Every port the demo uses, by name: chosen once, kept in `DIR/ports.json`.
fn port_names() -> Vec<String> {
    let mut names: Vec<String> = ["vn.http", "vn.grpc", "vn.audit", "na.http", "na.grpc", "na.audit"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for n in NODES {
        for p in ["r1", "https", "peer"] {
            names.push(format!("{}.{p}", n.key));
        }
    }
    names.extend(["backend.population", "backend.business", "backend.civil-status"].map(str::to_owned));
    names
}

fn ports(dir: &Path) -> Result<BTreeMap<String, u16>> {
    let path = dir.join("ports.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let ports: BTreeMap<String, u16> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not the demo's ports file", path.display()))?;
        if let Some(missing) = port_names().into_iter().find(|n| !ports.contains_key(n)) {
            bail!("{} lacks port {missing:?}; use a new --dir", path.display());
        }
        return Ok(ports);
    }
    // All probed at once, so no two names get the same port.
    let names = port_names();
    let probes = names
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")?;
    let mut ports = BTreeMap::new();
    for (name, probe) in names.into_iter().zip(&probes) {
        ports.insert(name, probe.local_addr()?.port());
    }
    drop(probes);
    std::fs::write(&path, serde_json::to_vec_pretty(&ports)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(ports)
}

fn port(ports: &BTreeMap<String, u16>, name: &str) -> Result<u16> {
    ports.get(name).copied().ok_or_else(|| anyhow!("no port {name:?}"))
}

fn instance_key(instance: &str) -> &'static str {
    if instance == VN { "vn" } else { "na" }
}

/// One instance's registry, running, with an administrator's session.
struct Instance {
    id: &'static str,
    dir: PathBuf,
    running: RunningRegistry,
    admin: AdminSession,
    anchor: Anchor,
    anchor_path: PathBuf,
}

async fn start_registry(root: &Path, id: &'static str, ports: &BTreeMap<String, u16>) -> Result<Instance> {
    let key = instance_key(id);
    let dir = root.join(key);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let toml = format!(
        "# The demo's {id} registry (written by `lienthong demo`).\ninstance = \"{id}\"\ndata_dir = \"registry\"\n\
         [http]\nlisten = \"127.0.0.1:{}\"\n[grpc]\nlisten = \"127.0.0.1:{}\"\n[globalconf]\nvalidity_secs = 600\nrefresh_secs = 60\n\
         [auto_approve]\nregister_node = true\nissue_signing_cert = true\nhost_subsystem = true\npublish_service = true\ngrant_access = true\nrevoke_access = true\n",
        port(ports, &format!("{key}.http"))?,
        port(ports, &format!("{key}.grpc"))?,
    );
    let path = dir.join("registry.toml");
    std::fs::write(&path, toml).with_context(|| format!("writing {}", path.display()))?;
    let config = RegistryConfig::load(&path)?;
    let home = RegistryHome::new(&config.data_dir);
    if !home.db_path().exists() {
        let opts = InitOptions {
            instance: config.instance.clone(),
            member_classes: vec![("GOV".parse()?, "Cơ quan nhà nước".into())],
            admin_name: "Quản trị viên demo".into(),
            key_algorithm: KeyAlgorithm::Ed25519,
            passphrase: None,
        };
        drop(home.init(&opts, config.settings(config.http.listen, config.grpc.listen), system_clock())?);
    }
    let running = lienthong_registry::serve(&config, None, system_clock()).await?;
    let admin_id = home.admin_identity(None)?;
    let ca = Certificate::from_pem(&std::fs::read_to_string(home.ca_cert_path())?)?;
    let admin = AdminSession::connect(&running.grpc_url(), &admin_id, &[ca], &config.instance).await?;
    let anchor_path = home.anchor_path();
    let anchor = Anchor::from_json(&std::fs::read_to_string(&anchor_path)?)?;
    Ok(Instance { id, dir, running, admin, anchor, anchor_path })
}

/// Members, subsystems and the partner that are not there yet.
async fn populate(inst: &mut Instance, partner: &Anchor) -> Result<()> {
    let have: Vec<MemberId> =
        inst.admin.list_members().await?.into_iter().filter_map(|m| m.id?.into_domain("id").ok()).collect();
    for (_, m) in MEMBERS.iter().filter(|(i, _)| *i == inst.id) {
        let id: MemberId = m.id.parse()?;
        if have.contains(&id) {
            continue;
        }
        inst.admin.add_member(&id, m.name, None).await?;
        for (code, name) in m.subsystems {
            inst.admin.add_subsystem(&id.clone().subsystem(code.parse()?), name).await?;
        }
    }
    let partners = inst.admin.list_federation_partners().await?;
    if !partners.iter().any(|p| p.instance == partner.instance.as_str()) {
        inst.admin.add_federation_partner(partner).await?;
    }
    Ok(())
}

/// The grants this instance gives, those not given yet.
async fn grant_all(inst: &mut Instance) -> Result<()> {
    let held: Vec<(ServiceId, ClientId)> = inst
        .admin
        .list_grants(None)
        .await?
        .into_iter()
        .filter(|g| g.revoked_at_ms == 0)
        .filter_map(|g| {
            let g = g.grant?;
            let service: ServiceId = g.service?.into_domain("service").ok()?;
            let Some(gc::access_grant::Subject::Client(c)) = g.subject else { return None };
            Some((service, c.into_domain("client").ok()?))
        })
        .collect();
    for (service, client, _) in GRANTS.iter().filter(|(_, _, i)| *i == inst.id) {
        let (service, client): (ServiceId, ClientId) = (service.parse()?, client.parse()?);
        if held.contains(&(service.clone(), client.clone())) {
            continue;
        }
        let g = NewGrant {
            service,
            to: GrantTo::Client(client),
            endpoints: vec![("GET".into(), "/*".into())],
            legal_basis: LEGAL_BASIS.into(),
            valid_from_ms: to_millis(SystemTime::now()) - 60_000,
            valid_until_ms: 0,
        };
        inst.admin.add_grant(&g).await?;
    }
    Ok(())
}

/// A running node of the demo.
struct Node {
    spec: &'static NodeSpec,
    dir: PathBuf,
    handle: NodeHandle,
}

fn node_dir(root: &Path, spec: &NodeSpec) -> PathBuf {
    root.join(instance_key(spec.instance)).join(spec.key)
}

/// Writes the node's `node.toml`, sets the node up against its registry the first time (keys,
/// CSRs, registration, approval), and starts it.
async fn start_node(
    root: &Path,
    spec: &'static NodeSpec,
    inst: &Instance,
    ports: &BTreeMap<String, u16>,
    backends: &Backends,
) -> Result<Node> {
    let dir = node_dir(root, spec);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let collector = inst.dir.join("audit").join(CERT_FILE);
    let mut toml = format!(
        "# The demo's node {id} (written by `lienthong demo`).
data_dir = \"node\"\n[consumer]\nhttp = \"127.0.0.1:{r1}\"\nhttps = \"127.0.0.1:{https}\"\n\
         [peer]\nlisten = \"127.0.0.1:{peer}\"\n[log]\ncheckpoint_interval_secs = 2\n[audit]\ncertificates = [{collector:?}]\n",
        id = spec.id,
        r1 = port(ports, &format!("{}.r1", spec.key))?,
        https = port(ports, &format!("{}.https", spec.key))?,
        peer = port(ports, &format!("{}.peer", spec.key))?,
        collector = collector.display().to_string(),
    );
    let urls = [backends.population, backends.business, backends.civil_status];
    for (service, backend, _) in spec.services {
        toml.push_str(&format!("[[service]]\nid = \"{service}\"\nurl = \"http://{}\"\n", urls[*backend]));
    }
    let path = dir.join("node.toml");
    std::fs::write(&path, &toml).with_context(|| format!("writing {}", path.display()))?;
    let config = NodeConfig::load(&path)?;
    let home = NodeHome::new(&config.data_dir);
    let listeners = Listeners::bind(&config).await?;
    let node: NodeId = spec.id.parse()?;
    // A kept directory holds a node set up by an earlier run: reopened as it is.
    let keys = match home.open(None) {
        Ok(keys) => keys,
        Err(_) => {
            let mut opts = NodeInitOptions::new(
                inst.anchor.clone(),
                node.clone(),
                vec![format!("https://127.0.0.1:{}", port(ports, &format!("{}.peer", spec.key))?)],
            );
            opts.subsystems =
                spec.subsystems.iter().map(|s| s.parse()).collect::<Result<Vec<SubsystemId>, _>>()?;
            opts.wait = Some(Duration::from_secs(30));
            opts.max_poll_interval = Duration::from_millis(100);
            let outcome = home.init(&opts).await?;
            if !outcome.is_complete() {
                bail!("node {node} could not be set up: {outcome:?}");
            }
            let keys = home.open(None)?;
            for (service, _, description) in spec.services {
                let spec = ServiceSpec {
                    id: service.parse()?,
                    openapi: false,
                    endpoints: vec![("GET".into(), "/*".into())],
                    description: (*description).into(),
                    disabled: false,
                    document: Vec::new(),
                };
                publish_service(&home, &keys, &spec, None, SystemTime::now()).await?;
            }
            keys
        }
    };
    let options = StartOptions { conf_poll_interval: Some(Duration::from_secs(2)), ..Default::default() };
    let handle = NodeHandle::start(config, keys, listeners, options).await?;
    Ok(Node { spec, dir, handle })
}

/// The audit service's client credential and an auditor's API key, made once per instance, in
/// the service's data directory. The directory is the owner's alone (0700): it holds the key.
fn audit_credentials(inst_dir: &Path) -> Result<(Credentials, String)> {
    let dir = inst_dir.join("audit");
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert, key, api) = (dir.join(CERT_FILE), dir.join(KEY_FILE), dir.join("api-key.txt"));
    if !cert.exists() {
        let (_, pem, private) = self_signed_client("lienthong-demo-audit")?;
        let api_key = Auditors::new_api_key().context("reading random bytes from /dev/urandom")?;
        for (path, text) in [(&key, private.to_pem().as_str()), (&api, &api_key), (&cert, &pem)] {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    let chain = lienthong_node::backend::roots_from_pem(&std::fs::read(&cert)?)
        .map_err(|e| anyhow!("{}: {e}", cert.display()))?;
    let private = lienthong_pki::PrivateKey::from_pem(&std::fs::read_to_string(&key)?, None)?;
    let api_key = std::fs::read_to_string(&api)?.trim().to_owned();
    Ok((Credentials { chain, key: private }, api_key))
}

/// One instance's audit service over its nodes.
struct Audit {
    running: Standalone,
    api_key: String,
    url: String,
}

async fn start_audit(
    inst: &Instance,
    nodes: &[Node],
    ports: &BTreeMap<String, u16>,
    credentials: Credentials,
    api_key: String,
) -> Result<Audit> {
    let mut auditors = Auditors::default();
    auditors.add_key_digest("kiem-toan-demo", &Auditors::key_digest(&api_key)).map_err(anyhow::Error::msg)?;
    let sources = nodes
        .iter()
        .filter(|n| n.spec.instance == inst.id)
        .map(|n| -> Result<NodeSource> {
            Ok(NodeSource {
                node: n.spec.id.parse()?,
                url: format!("https://127.0.0.1:{}", port(ports, &format!("{}.https", n.spec.key))?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let addr: SocketAddr =
        format!("127.0.0.1:{}", port(ports, &format!("{}.audit", instance_key(inst.id)))?).parse()?;
    let setup = StandaloneSetup {
        data_dir: inst.dir.join("audit"),
        anchor: inst.anchor.clone(),
        nodes: sources,
        credentials,
        auditors,
        node_timeout: Duration::from_secs(10),
        tls: None,
        max_connections: lienthong_audit_service::DEFAULT_MAX_CONNECTIONS,
        pull_every: Duration::from_secs(5),
    };
    let running = Standalone::start(setup, addr).await?;
    running.conf_client().refresh_now().await?;
    Ok(Audit { running, api_key, url: format!("http://{addr}/") })
}

/// One call of the traffic: who asks what.
struct Call {
    node: &'static str,
    client: &'static str,
    service: &'static str,
    path: String,
}

/// The `n`-th call: the four granted flows in turn (two of them across instances), with one
/// call denied on purpose (the planning department asking the population register).
fn call(n: u32, total: u32) -> Call {
    let pick = |ids: &[&str]| ids[usize::try_from(n).unwrap_or(0) % ids.len()].to_owned();
    if n == total / 2 {
        return Call {
            node: "lgsp-na",
            client: SO_KHDT,
            service: TRA_CUU_CONG_DAN,
            path: format!("/cong-dan/{}", pick(CITIZEN_IDS)),
        };
    }
    match n % 4 {
        0 => Call {
            node: "vpcp",
            client: CONG_DVC,
            service: TRA_CUU_CONG_DAN,
            path: format!("/cong-dan/{}", pick(CITIZEN_IDS)),
        },
        1 => Call {
            node: "vpcp",
            client: CONG_DVC,
            service: TRA_CUU_DN,
            path: format!("/doanh-nghiep/{}", pick(TAX_CODES)),
        },
        2 => Call {
            node: "lgsp-na",
            client: SO_TU_PHAP,
            service: TRA_CUU_CONG_DAN,
            path: format!("/cong-dan/{}", pick(CITIZEN_IDS)),
        },
        _ => Call {
            node: "lgsp-na",
            client: SO_KHDT,
            service: TRA_CUU_DN,
            path: format!("/doanh-nghiep/{}", pick(TAX_CODES)),
        },
    }
}

/// What one call came back with.
struct Outcome {
    message_id: String,
    status: u16,
    error: Option<String>,
}

async fn drive(ports: &BTreeMap<String, u16>, total: u32, run_id: &str) -> Result<Vec<(Call, Outcome)>> {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut calls = tokio::task::JoinSet::new();
    let mut done = Vec::new();
    let limit = 8;
    for n in 0..total {
        let c = call(n, total);
        let r1 = port(ports, &format!("{}.r1", c.node))?;
        let message_id = format!("demo-{run_id}-{n:05}");
        let uri = format!("http://127.0.0.1:{r1}/r1/{}{}", c.service, c.path);
        let req = http::Request::get(uri)
            .header("x-road-client", c.client)
            .header("x-road-id", &message_id)
            .header("x-road-userid", "demo-operator")
            .body(Empty::new())?;
        let client = client.clone();
        calls.spawn(async move {
            let answer = tokio::time::timeout(Duration::from_secs(30), async {
                let resp = client.request(req).await?;
                let status = resp.status().as_u16();
                let error =
                    resp.headers().get("x-road-error").and_then(|v| v.to_str().ok()).map(str::to_owned);
                resp.into_body().collect().await?;
                Ok::<_, anyhow::Error>((status, error))
            })
            .await;
            let (status, error) = match answer {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => (0, Some(format!("no answer: {e}"))),
                Err(_) => (0, Some("no answer within 30 s".into())),
            };
            (c, Outcome { message_id, status, error })
        });
        while calls.len() >= limit {
            if let Some(r) = calls.join_next().await {
                done.push(r?);
            }
        }
    }
    while let Some(r) = calls.join_next().await {
        done.push(r?);
    }
    done.sort_by(|a, b| a.1.message_id.cmp(&b.1.message_id));
    Ok(done)
}

/// Waits (at most 60 s) until every node's newest witnessed checkpoint covers its whole log.
async fn until_witnessed(nodes: &[Node]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in nodes {
        let log = n.handle.log().clone();
        loop {
            let size = log.head().size;
            let store = log.store().clone();
            let witnessed = tokio::task::spawn_blocking(move || {
                store.checkpoints().map(|all| {
                    all.iter()
                        .filter(|c| lienthong_msglog::checkpoint::is_witnessed(c))
                        .filter_map(|c| lienthong_msglog::checkpoint::Checkpoint::decode(c).ok())
                        .map(|c| c.size)
                        .max()
                        .unwrap_or(0)
                })
            })
            .await??;
            if witnessed >= size {
                break;
            }
            if Instant::now() >= deadline {
                bail!("node {}: its log of {size} records is witnessed only up to {witnessed}", n.spec.id);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// How many records the nodes that took part logged for `message_id`: (consumer node, provider
/// nodes).
fn logged(nodes: &[Node], c: &Call, message_id: &str) -> Result<(usize, usize)> {
    let mut consumer = 0;
    let mut provider = 0;
    for n in nodes {
        let count = n.handle.log().store().by_exchange(message_id)?.len();
        if n.spec.key == c.node {
            consumer += count;
        } else {
            provider += count;
        }
    }
    Ok((consumer, provider))
}

async fn sharing(audit: &Audit) -> Result<Value> {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("{}api/v1/sharing", audit.url))
        .header("authorization", format!("Bearer {}", audit.api_key))
        .body(Empty::new())?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("the audit service answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Sets up (or reopens) the world in `root`, drives `options.exchanges` exchanges, prints the
/// summary, and stops at `shutdown` (at once with `options.exit`, verifying every node's log).
pub(crate) async fn run(
    root: &Path,
    options: &DemoOptions,
    started: Instant,
    console: &dyn Console,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let DemoOptions { exchanges: total, exit, json: as_json, .. } = *options;
    let kept = options.dir.is_some();
    let say = |text: &str| {
        if !as_json {
            console.progress(text);
        }
    };
    let ports = ports(root)?;
    say("• starting the built-in backends (population register, business registration, civil status)");
    let backends = Backends::start([
        port(&ports, "backend.population")?,
        port(&ports, "backend.business")?,
        port(&ports, "backend.civil-status")?,
    ])
    .await
    .context("starting the demo backends")?;
    say("• registries: VN (NDXP) and VN-NA (Nghệ An LGSP), trusting each other");
    let mut vn = start_registry(root, VN, &ports).await?;
    let mut na = start_registry(root, NA, &ports).await?;
    let (vn_anchor, na_anchor) = (vn.anchor.clone(), na.anchor.clone());
    populate(&mut vn, &na_anchor).await?;
    populate(&mut na, &vn_anchor).await?;
    let vn_audit_credentials = audit_credentials(&vn.dir)?;
    let na_audit_credentials = audit_credentials(&na.dir)?;

    say("• nodes: set up against their registry (keys, certificates, registration), then serving");
    let mut nodes = Vec::new();
    for spec in NODES {
        let inst = if spec.instance == VN { &vn } else { &na };
        nodes.push(start_node(root, spec, inst, &ports, &backends).await?);
    }
    grant_all(&mut vn).await?;
    grant_all(&mut na).await?;
    // Every node on the newest configuration of its instance, merged with the partner's.
    for inst in [&vn, &na] {
        inst.running.registry.publish()?;
    }
    for n in &nodes {
        n.handle.conf_client().refresh_now().await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in &nodes {
        let other = if n.spec.instance == VN { NA } else { VN };
        let mut rx = n.handle.conf_subscription();
        let federated = rx.wait_for(|c| {
            c.as_ref().is_some_and(|c| c.conf.members.keys().any(|m| m.instance.as_str() == other))
        });
        if tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), federated).await.is_err()
        {
            bail!("node {} did not receive the partner instance's configuration in time", n.spec.id);
        }
    }
    // ...and its peer transport trusting the other instance's nodes, both directions.
    for n in &nodes {
        for other in NODES.iter().filter(|o| o.instance != n.spec.instance) {
            let id: NodeId = other.id.parse()?;
            if tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                n.handle.wait_for_peer(&id),
            )
            .await
            .is_err()
            {
                bail!("node {} does not trust the partner's node {id} in time", n.spec.id);
            }
        }
    }
    let vn_version = vn.running.registry.current().version;
    let na_version = na.running.registry.current().version;
    for n in &nodes {
        let v = if n.spec.instance == VN { vn_version } else { na_version };
        tokio::time::timeout(Duration::from_secs(30), n.handle.wait_for_conf(v)).await.ok();
    }

    say("• audit services: one per instance, pulling their nodes");
    let vn_audit = start_audit(&vn, &nodes, &ports, vn_audit_credentials.0, vn_audit_credentials.1).await?;
    let na_audit = start_audit(&na, &nodes, &ports, na_audit_credentials.0, na_audit_credentials.1).await?;

    say(&format!("• traffic: {total} exchanges"));
    let run_id = format!("{:x}", to_millis(SystemTime::now()));
    let traffic_started = Instant::now();
    let outcomes = drive(&ports, total, &run_id).await?;
    let traffic_ms = traffic_started.elapsed().as_millis();
    until_witnessed(&nodes).await?;
    for a in [&vn_audit, &na_audit] {
        for r in a.running.service().pull_all().await {
            if let Err(e) = r.outcome {
                bail!("the audit service could not pull {}: {e}", r.node);
            }
        }
    }

    // What happened, checked against the logs.
    let succeeded = outcomes.iter().filter(|(_, o)| o.status == 200).count();
    let denied = outcomes
        .iter()
        .filter(|(_, o)| o.error.as_deref() == Some("server.serverproxy.access_denied"))
        .count();
    let mut both_sides = 0;
    for (c, o) in &outcomes {
        let (consumer, provider) = logged(&nodes, c, &o.message_id)?;
        if consumer >= 2 && provider >= 1 {
            both_sides += 1;
        }
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| o.status != 200 && o.error.as_deref() != Some("server.serverproxy.access_denied"))
        .map(|(c, o)| {
            format!(
                "{} {} -> {}: {} {}",
                o.message_id,
                c.client,
                c.service,
                o.status,
                o.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    let vn_report = sharing(&vn_audit).await?;
    let na_report = sharing(&na_audit).await?;
    let r1 = |key: &str| port(&ports, &format!("{key}.r1")).map(|p| format!("http://127.0.0.1:{p}/r1/"));
    let sample = CITIZEN_IDS.iter().find(|id| id.starts_with("040")).copied().unwrap_or(CITIZEN_IDS[0]);
    let curl = format!(
        "curl -H 'X-Road-Client: {SO_TU_PHAP}' {}{TRA_CUU_CONG_DAN}/cong-dan/{sample}",
        r1("lgsp-na")?
    );
    let summary = json!({
        "dir": root.display().to_string(),
        "exchanges": total,
        "succeeded": succeeded,
        "denied": denied,
        "failed": failed,
        "logged_on_both_sides": both_sides,
        "traffic_ms": traffic_ms,
        "dashboards": {
            "VN": { "url": vn_audit.url, "api_key": vn_audit.api_key },
            "VN-NA": { "url": na_audit.url, "api_key": na_audit.api_key },
        },
        "r1": nodes.iter().map(|n| Ok((n.spec.id.to_owned(), json!(r1(n.spec.key)?)))).collect::<Result<serde_json::Map<_, _>>>()?,
        "curl": curl,
        "sharing": { "VN": vn_report, "VN-NA": na_report },
        "sample_birth_record": BIRTH_RECORDS.first(),
    });
    if as_json {
        console.note(&serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, &nodes, console);
    }
    if !failed.is_empty() {
        bail!("{} exchange(s) failed: {}", failed.len(), failed.join("; "));
    }
    if usize::try_from(total).unwrap_or(usize::MAX) != both_sides {
        bail!("only {both_sides} of {total} exchanges are logged on both sides");
    }

    if !exit {
        say("\nrunning; Ctrl-C stops everything");
        shutdown.await;
    }
    say("• stopping (each node closes its log with a last witnessed checkpoint)");
    let dirs: Vec<(String, PathBuf, PathBuf)> = nodes
        .iter()
        .map(|n| {
            let anchor = if n.spec.instance == VN { vn.anchor_path.clone() } else { na.anchor_path.clone() };
            (n.spec.id.to_owned(), n.dir.join("node").join("log"), anchor)
        })
        .collect();
    for a in [vn_audit, na_audit] {
        a.running.shutdown().await;
    }
    for n in nodes {
        n.handle.shutdown().await;
    }
    vn.running.shutdown().await;
    na.running.shutdown().await;
    backends.shutdown().await;
    if exit {
        for (node, log, anchor) in &dirs {
            let text = std::fs::read_to_string(anchor)?;
            let anchor = Anchor::from_json(&text)?;
            let keys: Vec<_> = anchor.signing_keys.iter().map(|k| (k.id, k.key.clone())).collect();
            let store = lienthong_msglog::open_existing(log)?;
            let report = lienthong_msglog::verify_store(&*store, Some(&keys), &mut |_, _| {})
                .with_context(|| format!("the log of node {node} does not verify"))?;
            say(&format!(
                "  log of {node}: {} records, {} witnessed checkpoints: verified",
                report.size, report.witnessed
            ));
        }
    }
    if !as_json {
        if kept {
            console.note(&format!("\neverything is kept in {} (a second run reuses it)", root.display()));
        }
        console.note(&format!("demo finished in {:.1} s", started.elapsed().as_secs_f64()));
    }
    Ok(())
}

fn print_summary(s: &Value, nodes: &[Node], console: &dyn Console) {
    console.note("\nLienthong demo: NDXP (VN) and Nghệ An LGSP (VN-NA) on this machine");
    console.note(&format!(
        "\nexchanges: {} in {} ms: {} succeeded, {} denied (no grant, on purpose), {} logged on both sides",
        s["exchanges"], s["traffic_ms"], s["succeeded"], s["denied"], s["logged_on_both_sides"]
    ));
    for instance in ["VN", "VN-NA"] {
        let report = &s["sharing"][instance];
        console.note(&format!("\nwho shares with whom, as {instance}'s audit sees it:"));
        for p in report["pairs"].as_array().into_iter().flatten() {
            console.note(&format!(
                "  {:<44} -> {:<48} {:>5} calls, {:>5} ok, {:>3} denied",
                p["consumer"].as_str().unwrap_or_default(),
                p["service"].as_str().unwrap_or_default(),
                p["calls"],
                p["successes"],
                p["denials"]
            ));
        }
        for g in report["grants"].as_array().into_iter().flatten().filter(|g| g["used"] == 0) {
            console.note(&format!(
                "  agreed but never used: {} -> {}",
                g["subject"].as_str().unwrap_or_default(),
                g["service"].as_str().unwrap_or_default()
            ));
        }
    }
    console.note("\ndashboards (log in with the API key):");
    for instance in ["VN", "VN-NA"] {
        let d = &s["dashboards"][instance];
        console.note(&format!(
            "  {instance:<6} {}  key {}",
            d["url"].as_str().unwrap_or_default(),
            d["api_key"].as_str().unwrap_or_default()
        ));
    }
    console.note("\nX-Road REST r1 endpoints:");
    for n in nodes {
        console.note(&format!("  {:<36} {}", n.spec.id, s["r1"][n.spec.id].as_str().unwrap_or_default()));
    }
    console.note("\na cross-instance call (a Nghệ An department asks the national population register):");
    console.note(&format!("  {}", s["curl"].as_str().unwrap_or_default()));
}
