//! Untrusted wire bytes: decoding and conversion to domain values never panic.
#![no_main]

use lienthong_proto::convert::{decode, optional, required};
use lienthong_proto::exchange::v1::RequestEnvelope;
use lienthong_proto::globalconf::v1::GlobalConf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = decode::<GlobalConf>("GlobalConf", data) {
        for node in conf.nodes {
            let _ = required(node.id, "nodes.id");
        }
        for member in conf.members {
            let _ = required(member.id, "members.id");
            let _ = optional(member.parent, "members.parent");
        }
        for grant in conf.grants {
            let _ = required(grant.service, "grants.service");
        }
    }
    if let Ok(env) = decode::<RequestEnvelope>("RequestEnvelope", data) {
        let _ = required(env.client, "client");
        let _ = required(env.service, "service");
        let _ = optional(env.target_node, "target_node");
    }
});
