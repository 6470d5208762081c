//! One `init` run's conversation with the registry: requests, polling for the operator's decisions, and the credentials that come back.

use super::*;

/// One `init` run's connection and limits.
pub(super) struct Session<'a> {
    pub(super) home: &'a NodeHome,
    pub(super) opts: &'a InitOptions,
    pub(super) api: ManagementServiceClient<Channel>,
    pub(super) url: String,
    pub(super) deadline: Instant,
}

impl Session<'_> {
    /// Brings `target` to approved if possible. `Ok(false)`: still pending at the deadline.
    pub(super) async fn step(&mut self, state: &mut NodeState, target: &Target) -> Result<bool, HomeError> {
        if state.is_approved(target) {
            return Ok(true);
        }
        let home = self.home;
        let request = match state.slot(target) {
            Some(r) if r.state == RequestState::Pending => r.clone(),
            Some(r) if r.state == RequestState::Revoked => {
                return Err(HomeError::Revoked {
                    what: target.to_string(),
                    request_id: r.id.clone(),
                    reason: r.reason.clone().unwrap_or_else(|| "no reason given".into()),
                });
            }
            // Nothing sent yet, or the operator turned the last one down: a new request.
            _ => {
                let id = format!("{}-{}", request_prefix(target), uuid::Uuid::new_v4());
                let signed = self.build(state, target, &id)?;
                let r = Request {
                    id,
                    state: RequestState::Pending,
                    reason: None,
                    signed: BASE64.encode(signed.encode_to_vec()),
                };
                // Recorded before it is sent, so a crash cannot orphan a request the registry holds.
                state.set_slot(target, Some(r.clone()));
                home.save_state(state)?;
                r
            }
        };
        let signed = BASE64
            .decode(&request.signed)
            .ok()
            .and_then(|b| pb::SignedManagementRequest::decode(b.as_slice()).ok())
            .ok_or_else(|| HomeError::Corrupt {
                path: home.state_path(),
                reason: format!("request {} is not readable", request.id),
            })?;

        // Sending a pending request again is harmless: the registry answers its current status.
        let status = match call(self.api.submit(signed)).await {
            Ok(s) => s,
            Err(e) if is_transient(&e) => {
                return Err(HomeError::Connect { url: self.url.clone(), reason: e.message().to_owned() });
            }
            Err(e) => {
                // A refused request left no trace in the registry: forget it too, so the next
                // run sends a fresh one once the cause is fixed.
                state.set_slot(target, None);
                home.save_state(state)?;
                return Err(HomeError::Refused { what: target.to_string(), message: e.message().to_owned() });
            }
        };
        let status = self.wait(&request.id, status).await?;
        let decided = match pb::RequestState::try_from(status.state) {
            Ok(pb::RequestState::Pending) => return Ok(false),
            Ok(pb::RequestState::Approved) => RequestState::Approved,
            Ok(pb::RequestState::Rejected) => RequestState::Rejected,
            Ok(pb::RequestState::Revoked) => RequestState::Revoked,
            _ => {
                return Err(HomeError::Refused {
                    what: target.to_string(),
                    message: format!("unknown request state {}", status.state),
                });
            }
        };
        if decided == RequestState::Approved
            && let Some((key_path, cert_path, identity)) = home.credential_files(target)
        {
            // Written before the state says approved, so an approved step always has its file.
            let refused = |message: String| HomeError::Refused { what: target.to_string(), message };
            let cert = Certificate::from_der(status.certificate.clone())
                .map_err(|e| refused(format!("the approval carries no usable certificate: {e}")))?;
            let key = read_key(&key_path, self.opts.passphrase.as_deref())?;
            check_cert(&cert, &key, &identity).map_err(refused)?;
            write_cert(&cert_path, &cert)?;
        }
        let reason = (!status.reason.is_empty()).then(|| status.reason.clone());
        if let Some(slot) = state.slot_mut(target) {
            slot.state = decided;
            slot.reason.clone_from(&reason);
        }
        home.save_state(state)?;
        if decided == RequestState::Approved {
            tracing::info!(request = %request.id, "{target} approved");
            return Ok(true);
        }
        let (what, request_id) = (target.to_string(), request.id);
        let reason = reason.unwrap_or_else(|| "no reason given".into());
        Err(if decided == RequestState::Revoked {
            HomeError::Revoked { what, request_id, reason }
        } else {
            HomeError::Rejected { what, request_id, reason }
        })
    }

    /// A new signed request for `target`, making its key first if it has none yet.
    pub(super) fn build(
        &self,
        state: &NodeState,
        target: &Target,
        id: &str,
    ) -> Result<pb::SignedManagementRequest, HomeError> {
        use pb::management_request::Kind;
        let home = self.home;
        let pass = self.opts.passphrase.as_deref();
        let node = &state.node;
        let (kind, signer, cert) = match target {
            Target::RegisterNode(_) => {
                let key = self.key(&home.auth_key_path())?;
                let csr = Csr::for_node(&key, node).map_err(|e| crypto("node CSR", e))?;
                let addresses = state
                    .addresses
                    .iter()
                    .map(|url| gc::NodeAddress { url: url.clone(), network: String::new() })
                    .collect();
                let kind = Kind::RegisterNode(pb::RegisterNode {
                    node: Some(node.into()),
                    csr: csr.der().to_vec(),
                    addresses,
                });
                // A first registration is signed by the key in its CSR: there is no certificate yet.
                (kind, key, None)
            }
            Target::SigningCert(member) => {
                let key = self.key(&home.signing_key_path(member))?;
                let csr = Csr::for_member(&key, member).map_err(|e| crypto("member CSR", e))?;
                let kind = Kind::IssueSigningCert(pb::IssueSigningCert {
                    member: Some(member.into()),
                    csr: csr.der().to_vec(),
                    node: Some(node.into()),
                });
                let (auth_key, auth_cert) = home.read_credential(
                    &home.auth_key_path(),
                    &home.auth_cert_path(),
                    &Identity::Node(node.clone()),
                    pass,
                )?;
                (kind, auth_key, Some(auth_cert))
            }
            Target::HostSubsystem(sub) => {
                let member = &sub.member;
                // The owner's subsystems are asked for by the owner; another member's by the node.
                let (key, cert) = if member == &node.owner {
                    home.read_credential(
                        &home.signing_key_path(member),
                        &home.signing_cert_path(member),
                        &Identity::Member(member.clone()),
                        pass,
                    )?
                } else {
                    home.read_credential(
                        &home.auth_key_path(),
                        &home.auth_cert_path(),
                        &Identity::Node(node.clone()),
                        pass,
                    )?
                };
                let kind = Kind::HostSubsystem(pb::HostSubsystem {
                    subsystem: Some(sub.into()),
                    node: Some(node.into()),
                });
                (kind, key, Some(cert))
            }
        };
        let request = pb::ManagementRequest {
            request_id: id.to_owned(),
            created_at_ms: to_millis(self.opts.clock.now()),
            kind: Some(kind),
        };
        sign_request(&request, &signer, cert.as_ref()).map_err(|e| crypto("signing the request", e))
    }

    /// The key at `path`, made now if a previous run did not get that far.
    pub(super) fn key(&self, path: &Path) -> Result<PrivateKey, HomeError> {
        let pass = self.opts.passphrase.as_deref();
        if path.exists() {
            return read_key(path, pass);
        }
        let key = PrivateKey::generate(self.opts.key_algorithm).map_err(|e| crypto("key generation", e))?;
        write_key(path, &key, pass)?;
        Ok(key)
    }

    /// Polls the request's status with backoff until it is decided or the deadline passes.
    pub(super) async fn wait(
        &mut self,
        id: &str,
        mut status: pb::RequestStatus,
    ) -> Result<pb::RequestStatus, HomeError> {
        let mut pause = FIRST_POLL_INTERVAL.min(self.opts.max_poll_interval);
        while status.state == pb::RequestState::Pending as i32 {
            let now = Instant::now();
            if now >= self.deadline {
                break;
            }
            tokio::time::sleep(pause.min(self.deadline - now)).await;
            pause = (pause * 2).min(self.opts.max_poll_interval);
            match call(self.api.get_status(pb::GetStatusRequest { request_id: id.to_owned() })).await {
                Ok(s) => status = s,
                // The registry may be restarting; keep trying until the deadline.
                Err(e) if is_transient(&e) => tracing::debug!(error = %e.message(), "status check failed"),
                Err(e) => {
                    return Err(HomeError::Refused {
                        what: format!("the status of request {id}"),
                        message: e.message().to_owned(),
                    });
                }
            }
        }
        Ok(status)
    }
}

/// One call, bounded in time.
pub(super) async fn call<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("the registry did not answer in time")),
    }
}

/// Checks what can be checked before anything is written or sent.
pub(super) fn check_options(opts: &InitOptions) -> Result<(), HomeError> {
    if opts.passphrase.as_deref().is_some_and(<[u8]>::is_empty) {
        return Err(HomeError::Invalid("the passphrase is empty".into()));
    }
    let instance = &opts.anchor.instance;
    if &opts.node.owner.instance != instance {
        return Err(HomeError::Invalid(format!(
            "node {} is not in instance {instance} of the anchor",
            opts.node
        )));
    }
    if opts.addresses.is_empty() {
        return Err(HomeError::Invalid("a node needs at least one address (https://host:port)".into()));
    }
    for a in &opts.addresses {
        let host = a.strip_prefix("https://").unwrap_or_default();
        if host.is_empty() || a.contains(char::is_whitespace) {
            return Err(HomeError::Invalid(format!("address {a:?} must be an https:// URL")));
        }
    }
    if let Some(s) = opts.subsystems.iter().find(|s| &s.member.instance != instance) {
        return Err(HomeError::Invalid(format!("subsystem {s} is not in instance {instance} of the anchor")));
    }
    if opts.max_poll_interval.is_zero() {
        return Err(HomeError::Invalid("max_poll_interval must not be zero".into()));
    }
    Ok(())
}

pub(super) fn request_prefix(t: &Target) -> &'static str {
    match t {
        Target::RegisterNode(_) => "register-node",
        Target::SigningCert(_) => "signing-cert",
        Target::HostSubsystem(_) => "host-subsystem",
    }
}

/// Errors worth retrying: the registry could not be reached or did not answer.
pub(super) fn is_transient(s: &tonic::Status) -> bool {
    matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown)
}

pub(super) fn file_name(member: &MemberId) -> String {
    member.to_string().replace('/', "_")
}

/// The certificate names `identity` and certifies `key`.
pub(super) fn check_cert(cert: &Certificate, key: &PrivateKey, identity: &Identity) -> Result<(), String> {
    let info = cert.info().map_err(|e| e.to_string())?;
    if &info.identity != identity {
        return Err(format!("the certificate is for {}, not {identity}", info.identity));
    }
    if info.public_key != key.public_key() {
        return Err("the certificate is not for this node's key".into());
    }
    Ok(())
}
