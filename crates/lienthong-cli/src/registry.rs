//! `lienthong registry ...`: create and serve a registry, and administer it over its admin API.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lienthong_globalconf::{Anchor, from_millis, verify};
use lienthong_pki::{Certificate, KeyAlgorithm};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_registry::admin::{AdminSession, GrantTo, NewGrant};
use lienthong_registry::{InitOptions, RegistryConfig, RegistryHome, system_clock};
use lienthong_types::{ClientId, GlobalGroupId, MemberClass, MemberId, NodeId, ServiceId, SubsystemId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::files::{NewKeyProtection, Passphrase};

#[derive(Debug, Subcommand)]
pub(crate) enum RegistryCommand {
    /// Create a registry: CA, TLS and configuration-signing keys, first administrator, anchor.
    Init(InitArgs),
    /// Serve the configuration (HTTP) and the management and admin API (gRPC over TLS).
    Serve(ServeArgs),
    #[command(subcommand)]
    Member(MemberCommand),
    #[command(subcommand)]
    Subsystem(SubsystemCommand),
    #[command(subcommand)]
    Node(NodeCommand),
    /// Onboarding requests from nodes and members.
    #[command(subcommand)]
    Requests(RequestsCommand),
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Access grants: the sharing agreements.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Global groups: named sets of clients a grant can name at once.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Other instances whose configuration this one trusts (NDXP <-> LGSP federation).
    #[command(subcommand)]
    Partner(PartnerCommand),
    /// Configuration-signing keys and their rollover. Run with the registry stopped.
    #[command(subcommand)]
    ConfKey(ConfKeyCommand),
    /// Inspect or check a signed global configuration.
    #[command(subcommand)]
    Globalconf(GlobalconfCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a group or replace its description and members.
    Put {
        id: GlobalGroupId,
        #[arg(long, default_value = "")]
        description: String,
        /// A client (member or subsystem) in the group (repeatable).
        #[arg(long = "member")]
        members: Vec<ClientId>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PartnerCommand {
    /// Trust another instance, given its anchor file (obtained from its operator).
    Add {
        #[arg(long)]
        anchor: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfKeyCommand {
    /// Start a rollover: a new key signs alongside the current one and is announced to nodes.
    Add {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, default_value = "ed25519")]
        key_type: KeyAlgorithm,
        #[command(flatten)]
        passphrase: Passphrase,
    },
    /// End a rollover: the key stops signing (once nodes have learned the new one).
    Retire {
        /// The key id (SHA-256 of the public key), as `conf-key list` prints it.
        id: lienthong_pki::Fingerprint,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        passphrase: Passphrase,
    },
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        passphrase: Passphrase,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArg {
    /// The registry's configuration file.
    #[arg(long, env = "LIENTHONG_REGISTRY_CONFIG", value_name = "FILE")]
    config: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Name on the first administrator's certificate.
    #[arg(long, default_value = "administrator")]
    admin_name: String,
    /// Member classes to define, as CODE=DESCRIPTION.
    #[arg(long = "member-class", value_name = "CODE=DESCRIPTION", default_values = ["GOV=State bodies", "COM=Companies"])]
    member_classes: Vec<String>,
    #[arg(long, default_value = "ed25519")]
    key_type: KeyAlgorithm,
    #[command(flatten)]
    protection: NewKeyProtection,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    passphrase: Passphrase,
}

/// How an admin command reaches the registry.
#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The admin API URL; default: the first from the configuration file.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    #[command(flatten)]
    passphrase: Passphrase,
}

#[derive(Debug, Subcommand)]
pub(crate) enum MemberCommand {
    Add {
        id: MemberId,
        #[arg(long)]
        name: String,
        /// The level-1 body this member belongs to.
        #[arg(long)]
        parent: Option<MemberId>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Close a member (revokes its certificates, nodes and grants).
    Close {
        id: MemberId,
        #[arg(long)]
        reason: String,
        /// The member that took over (e.g. after provinces merged).
        #[arg(long)]
        superseded_by: Option<MemberId>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SubsystemCommand {
    Add {
        id: SubsystemId,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Put a node in maintenance (consumers route around it) or take it out (--off).
    Maintenance {
        id: NodeId,
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a node and revoke its authentication certificate.
    Remove {
        id: NodeId,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum StateFilter {
    All,
    Pending,
    Approved,
    Rejected,
    Revoked,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RequestsCommand {
    List {
        #[arg(long, value_enum, default_value = "pending")]
        state: StateFilter,
        #[command(flatten)]
        admin: AdminArgs,
    },
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Reject a request; the requester sees the reason.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    List {
        /// Only this provider subsystem's services.
        #[arg(long)]
        provider: Option<SubsystemId>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GrantCommand {
    /// Record an agreement on behalf of the service's owner.
    Add {
        #[arg(long)]
        service: ServiceId,
        /// The client subsystem (or member) allowed to call.
        #[arg(long, required_unless_present = "group", conflicts_with = "group")]
        client: Option<ClientId>,
        /// A global group allowed to call.
        #[arg(long)]
        group: Option<GlobalGroupId>,
        /// The agreement or regulation the grant rests on.
        #[arg(long)]
        legal_basis: String,
        /// "METHOD /path/pattern" (repeatable); default: the whole service.
        #[arg(long = "endpoint", value_name = "METHOD PATH")]
        endpoints: Vec<String>,
        /// RFC 3339; default: now.
        #[arg(long)]
        valid_from: Option<String>,
        /// RFC 3339; default: no end.
        #[arg(long)]
        valid_until: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    List {
        #[arg(long)]
        service: Option<ServiceId>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GlobalconfCommand {
    /// Fetch the configuration the registry publishes now, verify it against the anchor and
    /// print a summary.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        /// Also save the signed bytes to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify a downloaded configuration file against an anchor; exit status 0 only if valid.
    Verify {
        file: PathBuf,
        #[arg(long)]
        anchor: PathBuf,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

pub(crate) fn run(cmd: RegistryCommand) -> Result<()> {
    match cmd {
        RegistryCommand::Init(a) => init(a),
        RegistryCommand::Serve(a) => runtime()?.block_on(serve(a)),
        RegistryCommand::Globalconf(GlobalconfCommand::Verify { file, anchor }) => {
            verify_file(&file, &anchor)
        }
        RegistryCommand::ConfKey(cmd) => conf_key(cmd),
        other => runtime()?.block_on(admin(other)),
    }
}

fn load_config(arg: &ConfigArg) -> Result<RegistryConfig> {
    Ok(RegistryConfig::load(&arg.config)?)
}

fn init(a: InitArgs) -> Result<()> {
    let config = load_config(&a.config)?;
    let member_classes = a
        .member_classes
        .iter()
        .map(|s| {
            let (code, description) = s.split_once('=').unwrap_or((s, ""));
            Ok((
                code.parse::<MemberClass>().with_context(|| format!("member class {code:?}"))?,
                description.to_owned(),
            ))
        })
        .collect::<Result<_>>()?;
    let opts = InitOptions {
        instance: config.instance.clone(),
        member_classes,
        admin_name: a.admin_name,
        key_algorithm: a.key_type,
        passphrase: a.protection.read()?,
    };
    let home = RegistryHome::new(&config.data_dir);
    let settings = config.settings(config.http.listen, config.grpc.listen);
    let registry = home.init(&opts, settings, system_clock())?;
    outln!("created registry for instance {} in {}", config.instance, home.dir().display());
    outln!("anchor (give it to nodes): {}", home.anchor_path().display());
    outln!("administrator credential: {}", home.admin_cert_path().display());
    outln!("CA certificate: {} ({})", home.ca_cert_path().display(), registry.ca_certificate().fingerprint());
    Ok(())
}

async fn serve(a: ServeArgs) -> Result<()> {
    let _logging = crate::logging::init()?;
    let config = load_config(&a.config)?;
    let passphrase = a.passphrase.read()?;
    let mut running = lienthong_registry::serve(&config, passphrase.as_deref(), system_clock()).await?;
    noteln!("registry {} serving", config.instance);
    noteln!("configuration: {}", running.conf_url());
    noteln!("api: {}", running.grpc_url());
    tokio::select! {
        () = shutdown_signal() => {}
        () = running.wait() => bail!("the registry stopped unexpectedly"),
    }
    running.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM from a service manager.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn session(a: &AdminArgs) -> Result<AdminSession> {
    let config = load_config(&a.config)?;
    let home = RegistryHome::new(&config.data_dir);
    let passphrase = a.passphrase.read()?;
    let admin = home.admin_identity(passphrase.as_deref())?;
    let ca = Certificate::from_pem(
        &std::fs::read_to_string(home.ca_cert_path())
            .with_context(|| format!("reading {}", home.ca_cert_path().display()))?,
    )?;
    let url = match &a.url {
        Some(u) => u.clone(),
        None => config.settings(config.http.listen, config.grpc.listen).registry_urls[0].clone(),
    };
    Ok(AdminSession::connect(&url, &admin, &[ca], &config.instance).await?)
}

fn time_arg(s: &Option<String>, what: &str) -> Result<i64> {
    let Some(s) = s else { return Ok(0) };
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .with_context(|| format!("{what}: {s:?} is not an RFC 3339 time"))?;
    Ok(lienthong_globalconf::to_millis(t.into()))
}

async fn admin(cmd: RegistryCommand) -> Result<()> {
    match cmd {
        RegistryCommand::Member(MemberCommand::Add { id, name, parent, admin }) => {
            session(&admin).await?.add_member(&id, &name, parent.as_ref()).await?;
            outln!("added member {id}");
        }
        RegistryCommand::Member(MemberCommand::List { admin }) => {
            for m in session(&admin).await?.list_members().await? {
                print_member(&m);
            }
        }
        RegistryCommand::Member(MemberCommand::Close { id, reason, superseded_by, admin }) => {
            session(&admin).await?.close_member(&id, superseded_by.as_ref(), &reason).await?;
            outln!("closed member {id}");
        }
        RegistryCommand::Subsystem(SubsystemCommand::Add { id, name, admin }) => {
            session(&admin).await?.add_subsystem(&id, &name).await?;
            outln!("added subsystem {id}");
        }
        RegistryCommand::Node(NodeCommand::List { admin }) => {
            for n in session(&admin).await?.list_nodes().await? {
                print_node(&n);
            }
        }
        RegistryCommand::Node(NodeCommand::Maintenance { id, off, admin }) => {
            session(&admin).await?.set_maintenance(&id, !off).await?;
            outln!("node {id}: maintenance {}", if off { "off" } else { "on" });
        }
        RegistryCommand::Group(GroupCommand::Put { id, description, members, admin }) => {
            session(&admin).await?.put_global_group(&id, &description, &members).await?;
            outln!("global group {id}: {} members", members.len());
        }
        RegistryCommand::Group(GroupCommand::List { admin }) => {
            for g in session(&admin).await?.list_global_groups().await? {
                outln!("{}  {}", id_str(&g.id), g.description);
                for m in &g.members {
                    outln!("    {}", id_str(&Some(m.clone())));
                }
            }
        }
        RegistryCommand::Partner(PartnerCommand::Add { anchor, admin }) => {
            let text =
                std::fs::read_to_string(&anchor).with_context(|| format!("reading {}", anchor.display()))?;
            let anchor = Anchor::from_json(&text).with_context(|| format!("anchor {}", anchor.display()))?;
            session(&admin).await?.add_federation_partner(&anchor).await?;
            outln!("instance {} is now a federation partner", anchor.instance);
        }
        RegistryCommand::Partner(PartnerCommand::List { admin }) => {
            for p in session(&admin).await?.list_federation_partners().await? {
                let keys: Vec<String> = p.signing_keys.iter().map(|k| hex_short(&k.key_id)).collect();
                outln!("{}  keys {}  {}", p.instance, keys.join(", "), p.conf_urls.join(", "));
            }
        }
        RegistryCommand::Node(NodeCommand::Remove { id, reason, admin }) => {
            session(&admin).await?.remove_node(&id, &reason).await?;
            outln!("removed node {id}");
        }
        RegistryCommand::Requests(RequestsCommand::List { state, admin }) => {
            let state = match state {
                StateFilter::All => None,
                StateFilter::Pending => Some(pb::RequestState::Pending),
                StateFilter::Approved => Some(pb::RequestState::Approved),
                StateFilter::Rejected => Some(pb::RequestState::Rejected),
                StateFilter::Revoked => Some(pb::RequestState::Revoked),
            };
            for r in session(&admin).await?.list_requests(state).await? {
                print_request(&r);
            }
        }
        RegistryCommand::Requests(RequestsCommand::Approve { id, reason, admin }) => {
            let s = session(&admin).await?.decide(&id, true, &reason).await?;
            outln!("request {id}: {}", state_name(s.state));
        }
        RegistryCommand::Requests(RequestsCommand::Reject { id, reason, admin }) => {
            let s = session(&admin).await?.decide(&id, false, &reason).await?;
            outln!("request {id}: {}", state_name(s.state));
        }
        RegistryCommand::Service(ServiceCommand::List { provider, admin }) => {
            for s in session(&admin).await?.list_services(provider.as_ref()).await? {
                print_service(&s);
            }
        }
        RegistryCommand::Grant(GrantCommand::Add {
            service,
            client,
            group,
            legal_basis,
            endpoints,
            valid_from,
            valid_until,
            admin,
        }) => {
            let to = match (client, group) {
                (Some(c), None) => GrantTo::Client(c),
                (None, Some(g)) => GrantTo::Group(g),
                _ => bail!("give exactly one of --client and --group"),
            };
            let endpoints = endpoints
                .iter()
                .map(|e| match e.split_once(' ') {
                    Some((m, p)) => Ok((m.to_owned(), p.trim().to_owned())),
                    None => bail!("--endpoint {e:?}: write it as \"METHOD /path\""),
                })
                .collect::<Result<_>>()?;
            let grant = NewGrant {
                service,
                to,
                endpoints,
                legal_basis,
                valid_from_ms: time_arg(&valid_from, "--valid-from")?,
                valid_until_ms: time_arg(&valid_until, "--valid-until")?,
            };
            let g = session(&admin).await?.add_grant(&grant).await?;
            outln!("added grant {}", g.grant_id);
        }
        RegistryCommand::Grant(GrantCommand::Revoke { id, reason, admin }) => {
            session(&admin).await?.revoke_grant(&id, &reason).await?;
            outln!("revoked grant {id}");
        }
        RegistryCommand::Grant(GrantCommand::List { service, admin }) => {
            for g in session(&admin).await?.list_grants(service.as_ref()).await? {
                print_grant(&g);
            }
        }
        RegistryCommand::Globalconf(GlobalconfCommand::Show { admin, out }) => {
            show_conf(&admin, out.as_deref()).await?
        }
        RegistryCommand::Init(_)
        | RegistryCommand::Serve(_)
        | RegistryCommand::ConfKey(_)
        | RegistryCommand::Globalconf(GlobalconfCommand::Verify { .. }) => {
            unreachable!("handled in run")
        }
    }
    Ok(())
}

/// Key rollover works on the registry's directory directly (the store is locked while it serves).
fn conf_key(cmd: ConfKeyCommand) -> Result<()> {
    let (config, passphrase) = match &cmd {
        ConfKeyCommand::Add { config, passphrase, .. }
        | ConfKeyCommand::Retire { config, passphrase, .. }
        | ConfKeyCommand::List { config, passphrase } => (load_config(config)?, passphrase.read()?),
    };
    let home = RegistryHome::new(&config.data_dir);
    let settings = config.settings(config.http.listen, config.grpc.listen);
    let (registry, _) = home
        .open(settings, passphrase.as_deref(), system_clock())
        .context("opening the registry (stop `registry serve` first)")?;
    let now = SystemTime::now();
    match cmd {
        ConfKeyCommand::Add { key_type, .. } => {
            let (key, file) = home.new_conf_key(key_type, passphrase.as_deref(), now)?;
            let id = key.public.id;
            registry.add_conf_key(key, &file)?;
            home.write_anchor(&registry, now)?;
            outln!("added configuration-signing key {id}; both keys sign until the old one is retired");
        }
        ConfKeyCommand::Retire { id, .. } => {
            registry.retire_conf_key(&id, now)?;
            home.write_anchor(&registry, now)?;
            outln!("retired configuration-signing key {id}");
        }
        ConfKeyCommand::List { .. } => {
            for k in registry.conf_keys() {
                let until = k.valid_until.map_or_else(|| "-".to_owned(), rfc3339);
                outln!("{}  {}  from {}  until {until}", k.id, k.key.algorithm(), rfc3339(k.valid_from));
            }
        }
    }
    outln!("anchor: {}", home.anchor_path().display());
    Ok(())
}

fn verify_file(file: &PathBuf, anchor: &PathBuf) -> Result<()> {
    let anchor_text =
        std::fs::read_to_string(anchor).with_context(|| format!("reading {}", anchor.display()))?;
    let anchor = Anchor::from_json(&anchor_text).with_context(|| format!("anchor {}", anchor.display()))?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let verified =
        verify(&bytes, &anchor, SystemTime::now()).with_context(|| format!("{}", file.display()))?;
    print_conf(&verified);
    Ok(())
}

async fn show_conf(a: &AdminArgs, out: Option<&std::path::Path>) -> Result<()> {
    let config = load_config(&a.config)?;
    let home = RegistryHome::new(&config.data_dir);
    let anchor = Anchor::from_json(
        &std::fs::read_to_string(home.anchor_path())
            .with_context(|| format!("reading {}", home.anchor_path().display()))?,
    )?;
    let ca = Certificate::from_pem(
        &std::fs::read_to_string(home.ca_cert_path())
            .with_context(|| format!("reading {}", home.ca_cert_path().display()))?,
    )?;
    let url = a
        .url
        .clone()
        .unwrap_or_else(|| config.settings(config.http.listen, config.grpc.listen).registry_urls[0].clone());
    let mut client =
        lienthong_registry::client::management_client(&url, None, &[ca], &config.instance).await?;
    let response = client.get_global_conf(pb::GetGlobalConfRequest { known_version: 0 }).await?.into_inner();
    let bytes = prost::Message::encode_to_vec(&response.conf.unwrap_or_default());
    let verified = verify(&bytes, &anchor, SystemTime::now())?;
    if let Some(out) = out {
        crate::files::write_new(out, &bytes, false)?;
    }
    print_conf(&verified);
    Ok(())
}

fn print_conf(verified: &lienthong_globalconf::VerifiedConf) {
    let c = &verified.conf;
    outln!("valid: instance {} version {}", c.instance, c.version);
    outln!("generated {}  expires {}", rfc3339(c.generated_at), rfc3339(c.expires_at));
    outln!("signed by key {}", verified.signed_by.id);
    outln!(
        "{} members, {} nodes, {} services, {} grants, {} federation partners",
        c.members.len(),
        c.nodes.len(),
        c.services.len(),
        c.grants.len(),
        c.federation_partners.len()
    );
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

fn ms(t: i64) -> String {
    if t == 0 { "-".into() } else { rfc3339(from_millis(t)) }
}

fn id_str<T>(v: &Option<T>) -> String
where
    T: Clone + lienthong_proto::convert::IntoDomain,
    T::Domain: std::fmt::Display,
{
    v.clone().and_then(|v| v.into_domain("id").ok()).map_or_else(|| "?".into(), |d| d.to_string())
}

fn print_member(m: &gc::Member) {
    let status = gc::MemberStatus::try_from(m.status).map_or("?", |s| s.as_str_name());
    outln!("{}  {}  [{}]", id_str(&m.id), m.name, status.trim_start_matches("MEMBER_STATUS_").to_lowercase());
    for s in &m.subsystems {
        outln!("    subsystem {}  {}", s.code, s.name);
    }
}

fn print_node(n: &gc::Node) {
    let addresses: Vec<&str> = n.addresses.iter().map(|a| a.url.as_str()).collect();
    outln!(
        "{}  {}  auth {}{}",
        id_str(&n.id),
        addresses.join(", "),
        hex_short(&n.auth_cert_sha256),
        if n.maintenance { "  [maintenance]" } else { "" }
    );
    for s in &n.hosted_subsystems {
        outln!("    hosts {}", id_str(&Some(s.clone())));
    }
}

fn hex_short(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    h.chars().take(16).collect()
}

fn state_name(state: i32) -> String {
    pb::RequestState::try_from(state)
        .map_or("?", |s| s.as_str_name())
        .trim_start_matches("REQUEST_STATE_")
        .to_lowercase()
}

fn print_request(r: &pb::RequestSummary) {
    let status = r.status.clone().unwrap_or_default();
    let kind = r.request.as_ref().and_then(|q| q.kind.as_ref()).map_or("?", |k| match k {
        pb::management_request::Kind::RegisterNode(_) => "register-node",
        pb::management_request::Kind::IssueSigningCert(_) => "issue-signing-cert",
        pb::management_request::Kind::HostSubsystem(_) => "host-subsystem",
        pb::management_request::Kind::PublishService(_) => "publish-service",
        pb::management_request::Kind::GrantAccess(_) => "grant-access",
        pb::management_request::Kind::RevokeAccess(_) => "revoke-access",
    });
    let reason = if status.reason.is_empty() { String::new() } else { format!("  ({})", status.reason) };
    outln!(
        "{}  {kind}  {}  {}{reason}",
        status.request_id,
        state_name(status.state),
        ms(status.updated_at_ms)
    );
}

fn print_service(s: &gc::Service) {
    let kind = gc::ServiceType::try_from(s.r#type).map_or("?", |t| t.as_str_name());
    outln!(
        "{}  {}{}  {}",
        id_str(&s.id),
        kind.trim_start_matches("SERVICE_TYPE_").to_lowercase(),
        if s.disabled { " [disabled]" } else { "" },
        s.description
    );
}

fn print_grant(g: &pb::StoredGrant) {
    let Some(grant) = &g.grant else { return };
    let subject = match &grant.subject {
        Some(gc::access_grant::Subject::Client(c)) => id_str(&Some(c.clone())),
        Some(gc::access_grant::Subject::Group(gr)) => id_str(&Some(gr.clone())),
        None => "?".into(),
    };
    let endpoints: Vec<String> = grant.endpoints.iter().map(|e| format!("{} {}", e.method, e.path)).collect();
    let scope = if endpoints.is_empty() { "*".into() } else { endpoints.join(", ") };
    let state = if g.revoked_at_ms == 0 {
        "in force".to_owned()
    } else {
        format!("revoked {} ({})", ms(g.revoked_at_ms), g.revoked_reason)
    };
    outln!(
        "{}  {} -> {}  [{scope}]  basis: {}  valid {} .. {}  {state}",
        grant.grant_id,
        subject,
        id_str(&grant.service),
        grant.legal_basis,
        ms(grant.valid_from_ms),
        ms(grant.valid_until_ms)
    );
}
