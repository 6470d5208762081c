//! Topologies C and D: two pairs of Lienthong nodes, each a `lienthong node serve` process.
//! The pairs are set up like any deployment, through the registry (membership, `node init`
//! with keys, certificates and registration, service publication, grants), using the
//! testkit's in-process registry, which stays in this process to serve the configuration.
//! The C pair runs as this binary's own transport-only nodes (`lienthong-bench transport-node`,
//! see `lienthong_bench::transport_only`); the D pair as `lienthong node serve`, in full.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use lienthong_testkit::{NodeSpec, Topology, node_id, service, subsystem};
use lienthong_types::ClientId;

use crate::procs::{Proc, wait_listening};

const PROVIDER: &str = "VN/GOV/000.00.00.G01";
const CONSUMER: &str = "VN/GOV/000.00.00.G02";

/// One consumer node and one provider node as processes.
#[derive(Debug)]
pub(crate) struct NodePair {
    pub consumer: Proc,
    pub provider: Proc,
    /// The r1 URL of the benchmark service on the consumer node.
    pub url: String,
    /// The X-Road-Client of the calling subsystem.
    pub client: String,
}

/// Both pairs, and the registry that publishes their configuration.
pub(crate) struct Lienthong {
    pub transport: NodePair,
    pub full: NodePair,
    _topology: Topology,
}

impl std::fmt::Debug for Lienthong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lienthong").field("transport", &self.transport).field("full", &self.full).finish()
    }
}

/// Names of one pair: (consumer node, client subsystem, provider node, provider subsystem).
fn names(tag: &str) -> (String, String, String, String) {
    (
        format!("{CONSUMER}/ss-client-{tag}"),
        format!("{CONSUMER}/client-{tag}"),
        format!("{PROVIDER}/ss-provider-{tag}"),
        format!("{PROVIDER}/bench-{tag}"),
    )
}

fn service_of(tag: &str) -> String {
    format!("{}/echo", names(tag).3)
}

pub(crate) async fn start(
    lienthong: &Path,
    bench: &Path,
    backend: SocketAddr,
    cpu: Option<u32>,
    dir: &Path,
) -> Result<Lienthong> {
    let backend_url = format!("http://{backend}");
    let mut specs = Vec::new();
    for tag in ["c", "d"] {
        let (cnode, client, pnode, psub) = names(tag);
        specs.push(NodeSpec {
            id: node_id(&cnode),
            subsystems: vec![subsystem(&client)],
            services: vec![],
            extra_toml: String::new(),
        });
        specs.push(NodeSpec {
            id: node_id(&pnode),
            subsystems: vec![subsystem(&psub)],
            services: vec![],
            extra_toml: format!("[[service]]\nid = \"{}\"\nurl = \"{backend_url}\"\n", service_of(tag)),
        });
    }
    let mut topology = Topology::build(
        &[
            (PROVIDER, "Bộ Công an", &["bench-c", "bench-d"]),
            (CONSUMER, "Văn phòng Chính phủ", &["client-c", "client-d"]),
        ],
        specs,
        0,
    )
    .await;
    for tag in ["c", "d"] {
        let (_, client, pnode, _) = names(tag);
        topology.publish(&service(&service_of(tag)), &node_id(&pnode)).await;
        topology.grant(&service(&service_of(tag)), &ClientId::Subsystem(subsystem(&client))).await;
    }
    topology.sync().await;

    // The nodes were set up and started in this process; they move to processes of their own
    // on the same directories and ports (the registered addresses).
    let mut procs = Vec::new();
    for i in 0..topology.nodes.len() {
        let node = &topology.nodes[i];
        let handle = node.handle();
        let http = handle.http.context("the node has an HTTP listener")?;
        let peer = handle.peer;
        let data_dir = topology.node_dir(i);
        let service_toml = node
            .config
            .services
            .iter()
            .map(|s| format!("[[service]]\nid = \"{}\"\nurl = \"{}\"\n", s.id, backend_url))
            .collect::<String>();
        topology.stop(i).await;
        let id = topology.nodes[i].id.to_string();
        let tag = if id.ends_with("-c") { "c" } else { "d" };
        let role = if id.contains("ss-client") { "consumer" } else { "provider" };
        let name = format!("lienthong-{tag}-{role}");
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[consumer]\nhttp = \"{http}\"\n[peer]\nlisten = \"{peer}\"\n{service_toml}",
                data_dir.display().to_string()
            ),
        )?;
        let config_s = config.display().to_string();
        let (program, args) = if tag == "c" {
            (bench, vec!["transport-node", "--config", config_s.as_str()])
        } else {
            (lienthong, vec!["node", "serve", "--config", config_s.as_str()])
        };
        let mut proc = Proc::start(&name, program, &args, cpu, &dir.join(format!("{name}.log")))?;
        wait_listening(&mut proc, http, Duration::from_secs(20))?;
        wait_listening(&mut proc, peer, Duration::from_secs(20))?;
        procs.push((tag, role, http, proc));
    }
    let mut take = |tag: &str, role: &str| {
        let i = procs.iter().position(|p| p.0 == tag && p.1 == role).expect("every node was started");
        procs.remove(i)
    };
    let mut pair = |tag: &str| {
        let (_, _, http, consumer) = take(tag, "consumer");
        let (_, _, _, provider) = take(tag, "provider");
        NodePair {
            consumer,
            provider,
            url: format!("http://{http}/r1/{}/data", service_of(tag)),
            client: names(tag).1,
        }
    };
    let transport = pair("c");
    let full = pair("d");
    Ok(Lienthong { transport, full, _topology: topology })
}
