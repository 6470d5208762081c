//! Consumer-side routing: which provider nodes may serve a call, in the order to try them.

use lienthong_globalconf::{GlobalConf, MemberStatus, Node};
use lienthong_types::{Fault, NodeId, ServiceId};

use crate::Reject;

/// The provider nodes to try for `service`, in order: the nodes hosting its subsystem, without
/// those in maintenance, rotated by `start` so load spreads across them. `pinned` is the node
/// the client asked for with `X-Road-Security-Server`.
pub fn provider_nodes<'c>(
    conf: &'c GlobalConf,
    service: &'c ServiceId,
    pinned: Option<&NodeId>,
    start: usize,
) -> Result<Vec<&'c Node>, Reject> {
    let subsystem = &service.subsystem;
    let member =
        conf.member(&subsystem.member).filter(|m| m.status == MemberStatus::Active).ok_or_else(|| {
            Reject::new(Fault::ClientUnknownMember, format!("member {} is not registered", subsystem.member))
        })?;
    if !member.subsystems.contains_key(&subsystem.code) {
        return Err(Reject::new(
            Fault::ClientUnknownMember,
            format!("subsystem {subsystem} is not registered"),
        ));
    }
    let is_meta = crate::meta::is_metaservice(service.code.as_str());
    if !is_meta && conf.service(service).is_none() {
        return Err(Reject::new(Fault::ClientUnknownService, format!("service {service} is not registered")));
    }
    let hosting: Vec<&Node> = conf.nodes_hosting(subsystem).collect();
    if let Some(pinned) = pinned {
        let node = hosting.iter().find(|n| &n.id == pinned).ok_or_else(|| {
            Reject::new(Fault::InvalidSecurityServer, format!("node {pinned} does not host {subsystem}"))
        })?;
        if node.maintenance {
            return Err(Reject::new(
                Fault::ClientMaintenanceMode,
                format!("node {pinned} is in maintenance"),
            ));
        }
        return Ok(vec![node]);
    }
    if hosting.is_empty() {
        return Err(Reject::new(Fault::ClientUnknownService, format!("no node hosts {subsystem}")));
    }
    let mut open: Vec<&Node> = hosting.into_iter().filter(|n| !n.maintenance).collect();
    if open.is_empty() {
        return Err(Reject::new(
            Fault::ClientMaintenanceMode,
            format!("every node of {subsystem} is in maintenance"),
        ));
    }
    let len = open.len();
    open.rotate_left(start % len);
    Ok(open)
}
